"""Model-only throughput: the exported ONNX model on each engine the agent has (ONNX Runtime, OpenVINO) vs the
same network in PyTorch eager, per architecture and batch size, in one run. This is the ceiling the end-to-end
agent is measured against.

    python -m bench.model [--archs demo,slowfast_r50_4x16] [--batches 1,8] [--device cpu,openvino|cuda] [--fp16]

Runtimes: ``ort`` and ``openvino`` = :class:`agent.live.runtime.ModelRuntime` on that engine (``--device``, one or
several, as ``models.NAME.device``; auto is whichever the agent picks), fed uint8 numpy batches (the agent's path:
on CUDA, IO binding with pre-allocated device buffers, so the host→device copy of the uint8 clip is included);
``ort_device`` (CUDA only) = the same session with inputs already on the GPU (pure model time); ``torch`` = PyTorch
eager on uint8 tensors already on the device (fp16 weights with ``--fp16``). Random weights; ``demo`` is the
bundled ``models/motion_demo.onnx`` (SlowOnly, ResNet-18 width 16, 96 px). One JSON line per (arch, runtime,
batch); the engines' lines of one batch size are measured one after the other.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from bench.common import CACHE, DEMO_ARCH, DEMO_MODEL, Emitter

ARCH_SIZES = {"demo": DEMO_ARCH}


TINY = {"depth": 18, "width": 8}  # --tiny: smoke runs (CPU), same graph structure, a fraction of the work


def model_file(
    arch: str, *, size: int = 224, fp16: bool = False, num_classes: int = 400, tiny: bool = False, width: int = 0
) -> Path:
    """The exported model for ``arch`` (random weights, cached under .cache/bench/models); ``width``: ResNet-18 of
    that base width (MMAction2's is 64)."""
    if arch == "demo":
        return DEMO_MODEL
    shape = TINY if tiny else ({"depth": 18, "width": width} if width else {})
    tag = "_tiny" if tiny else (f"_r18w{width}" if width else "")
    out = CACHE / "models" / f"{arch}_{size}{'_fp16' if fp16 else ''}{tag}_{num_classes}.onnx"
    if out.exists():
        return out
    from export import to_onnx

    labels = CACHE / "models" / f"labels{num_classes}.txt"
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text("".join(f"class{i}\n" for i in range(num_classes)))
    tmp = out.with_suffix(".part.onnx")
    argv = ["--arch", arch, "--labels", str(labels), "--out", str(tmp), "--size", str(size)]
    if shape:
        argv += ["--depth", str(shape["depth"]), "--width", str(shape["width"])]
    if to_onnx.main(argv + (["--fp16"] if fp16 else [])) != 0:
        raise RuntimeError(f"export of {arch} failed")
    tmp.rename(out)
    return out


def runtime_for(
    path: Path, device: str, max_batch: int, threads: int | None = None, workers: int = 1, precision: str = "fp32"
):
    from agent.config import ModelConfig
    from agent.live.runtime import ModelRuntime

    config = ModelConfig(
        path=path, device=device, max_batch=max_batch, threads=threads, workers=workers, precision=precision
    )
    return ModelRuntime(path.stem, config)


def engine_name(runtime) -> str:
    """A runtime's name in the records: ``ort`` (ONNX Runtime, CPU or CUDA), ``openvino`` or ``openvino_bf16``."""
    if not runtime.device.startswith("openvino"):
        return "ort"
    return "openvino_bf16" if runtime.config.precision == "bf16" else "openvino"


def random_batch(spec, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i.name: rng.integers(0, 256, (n, i.frames, spec.size, spec.size, 3), dtype=np.uint8) for i in spec.inputs}


def time_runs(fn, *, min_runs: int, seconds: float, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    runs: list[float] = []
    start = time.perf_counter()
    while len(runs) < min_runs or (time.perf_counter() - start < seconds and len(runs) < 200):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return runs


def runtime_fns(runtime, inputs: dict[str, np.ndarray]) -> dict:
    fns = {engine_name(runtime): lambda: runtime.infer(inputs)}
    if runtime.device == "cuda":
        import onnxruntime as ort

        device_id = runtime.config.device_id
        values = {k: ort.OrtValue.ortvalue_from_numpy(v, "cuda", device_id) for k, v in inputs.items()}
        session = runtime.backend.session

        def resident() -> None:
            binding = session.io_binding()
            for k, v in values.items():
                binding.bind_ortvalue_input(k, v)
            binding.bind_output(runtime.spec.output.name, "cuda", device_id)
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        fns["ort_device"] = resident
    return fns


def torch_graph(arch: str, spec, device: str, fp16: bool, threads: int | None, tiny: bool = False):
    """The same network in PyTorch eager (random weights), uint8 NTHWC in, probabilities out."""
    import torch

    from export.models import ARCHS, build_model
    from export.to_onnx import ClipsToScores

    if threads:
        torch.set_num_threads(threads)
    kwargs = {"num_classes": len(spec.labels)}
    if arch == "demo":
        kwargs |= {"depth": DEMO_ARCH["depth"], "width": DEMO_ARCH["width"]}
        arch = DEMO_ARCH["arch"]
    elif tiny:
        kwargs |= TINY
    net = build_model(arch, **kwargs).eval()
    if fp16:
        net = net.half()
    return ClipsToScores(net, ARCHS[arch].kind, fp16=fp16).eval().to(device)


def torch_fn(graph, spec, inputs: dict[str, np.ndarray], device: str):
    import torch

    tensors = [torch.from_numpy(inputs[i.name]).to(device) for i in spec.inputs]

    def run() -> None:
        with torch.inference_mode():
            out = graph(*tensors)
            if device == "cuda":
                torch.cuda.synchronize()
            else:
                out.numpy()

    return run


def bench_arch(arch: str, args: argparse.Namespace, emit: Emitter) -> list[dict]:
    fp16 = args.fp16 and arch != "demo"
    path = model_file(arch, size=args.size, fp16=fp16, tiny=args.tiny)
    runtimes = [runtime_for(path, device, max(args.batches), args.threads) for device in args.device.split(",")]
    if args.bf16:
        runtimes.append(runtime_for(path, "openvino", max(args.batches), args.threads, precision="bf16"))
    spec = runtimes[0].spec
    torch_device = "cuda" if any(r.device == "cuda" for r in runtimes) else "cpu"
    records = []
    graph = None
    if "torch" in args.runtimes:
        try:  # fp16 PyTorch only on CUDA (CPU half convolutions are not what anyone deploys)
            graph = torch_graph(arch, spec, torch_device, fp16 and torch_device == "cuda", args.threads, args.tiny)
        except Exception as e:  # torch missing or the arch cannot run there: the engines' numbers still count
            emit({"bench": "model", "arch": arch, "runtime": "torch", "error": str(e)[:200]})
    for n in args.batches:
        inputs = random_batch(spec, n)
        fns = {}
        for runtime in runtimes:
            fns |= {name: (runtime, fn) for name, fn in runtime_fns(runtime, inputs).items()}
        if graph is not None:
            fns["torch"] = (None, torch_fn(graph, spec, inputs, torch_device))
        for name, (runtime, fn) in fns.items():
            if name not in args.runtimes and not (name == "ort_device" and "ort" in args.runtimes):
                continue
            runs = time_runs(fn, min_runs=args.min_runs, seconds=args.seconds)
            median = statistics.median(runs)
            records.append(
                emit(
                    {
                        "bench": "model",
                        "arch": arch,
                        "runtime": name,
                        "provider": runtime.device if runtime is not None else f"torch-{torch_device}",
                        "fp16": fp16 and (name != "torch" or torch_device == "cuda"),
                        "tiny": args.tiny and arch != "demo",
                        "size": spec.size,
                        "batch": n,
                        "runs": len(runs),
                        "batch_ms_p50": round(median * 1000, 2),
                        "clips_per_s": round(n / median, 2),
                        "file": path.name,
                    }
                )
            )
    return records


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="demo", help="comma-separated: demo and/or names from export.models.ARCHS")
    p.add_argument("--batches", default="1,4,8,16", help="comma-separated batch sizes")
    p.add_argument("--runtimes", default="ort,openvino,openvino_bf16,torch", help="which of them to measure")
    p.add_argument("--bf16", action="store_true", help="also OpenVINO with precision bf16 (runtime openvino_bf16)")
    p.add_argument(
        "--device", default="auto", help="comma-separated, as models.NAME.device: auto, cpu, cuda, openvino, ..."
    )
    p.add_argument("--fp16", action="store_true", help="fp16 models (export --fp16) and fp16 PyTorch")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--tiny", action="store_true", help="ResNet-18 width 8 versions of the archs (smoke runs)")
    p.add_argument("--threads", type=int, help="CPU threads for every runtime (default: theirs)")
    p.add_argument("--seconds", type=float, default=3.0, help="time per measurement (after warm-up)")
    p.add_argument("--min-runs", type=int, default=3)
    p.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    args = parser().parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.runtimes = args.runtimes.split(",")
    emit = Emitter(args.out)
    records = []
    try:
        for arch in args.archs.split(","):
            records += bench_arch(arch, args, emit)
    finally:
        emit.close()
    return records


if __name__ == "__main__":
    main()
