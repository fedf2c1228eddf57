"""All benchmarks in one run, JSON lines into bench/results/<device>.jsonl (or --out), then the plots.

    python -m bench                 # this machine (CPU): what `make bench` runs; ends with "efficiency: X.XX" and
                                    # "cpu backend speedup: X.XX" (OpenVINO ÷ ONNX Runtime's CPU provider, e2e)
    python -m bench --gpu           # a CUDA machine (bench/gpu.sh): fp16 models, batch 1/32, many cameras
    python -m bench --gpu --smoke   # the same steps on the CPU with tiny models, in about a minute

Each step is skipped (with a JSON line saying so) once the time budget (--budget-s) is spent, so a lent machine
always returns what was measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

if "--gpu" in sys.argv:  # torch first: it loads the CUDA / cuDNN libraries onnxruntime-gpu needs
    try:
        import torch  # noqa: F401
    except ImportError:
        pass

from bench.common import ROOT, Emitter, device_name, slug  # noqa: E402

GPU_ARCHS = "slowfast_r50_4x16,tsn_r50,i3d_r50,slowonly_r50_8x8,slowfast_r50_8x8"


def steps(args: argparse.Namespace, out: Path) -> list[tuple[str, callable]]:
    from bench import convert, cpu_backends, decode, e2e, evidence, flow, interp, model, offline, regions

    o = ["--out", str(out)]
    cores = str(len(os.sched_getaffinity(0)))
    sweep = ["--max-batch", "64", "--every", "0.25", "--seconds", "10", "--warmup", "3", "--decode-threads", "1"]
    per_core = ["--workers", cores]
    repeat = ["--repeats", "3"]
    if not args.gpu:  # this machine: `make bench`. Model-only: both CPU engines side by side, OpenVINO also in bf16.
        engines = ["--device", "cpu,openvino", "--bf16"]
        return [
            ("decode", lambda: decode.main(["--repeats", "3", *o])),
            # Optical flow per field (each method; OpenCV on every core and on one) at the demo's size, 224² and a
            # 16:9 camera's 455x256, next to decoding and converting the same frames.
            ("flow", lambda: flow.main(o)),
            ("interp", lambda: interp.main(o)),
            (
                "model",
                lambda: model.main(["--archs", "demo", "--batches", "1,2,4,8,16,32", "--seconds", "2", *engines, *o]),
            ),
            (
                "model_r50",
                lambda: model.main(
                    [
                        "--archs",
                        "slowonly_r50_8x8,slowfast_r50_4x16",
                        "--batches",
                        "1",
                        "--seconds",
                        "2",
                        "--min-runs",
                        "3",
                        *engines,
                        *o,
                    ]
                ),
            ),  # fmt: skip
            # The default engine from here on (device auto: OpenVINO where installed, as `make install` has it).
            # One worker per core (models.NAME.workers), as a many-camera CPU box is configured. K is swept until
            # saturation, wherever this machine's is (e2e --cameras auto). The summary's K three times in all: its
            # efficiency (the line `make bench` ends with) is their median.
            ("e2e", lambda: e2e.main([*repeat, *sweep, *per_core, *o])),
            # ONNX Runtime's CPU provider and OpenVINO, the same sweep one after the other, the demo model and
            # SlowFast-R50: the line `cpu backend speedup` (e2e clips/s at saturation, OpenVINO ÷ ONNX Runtime).
            ("cpu_backends", lambda: cpu_backends.main(o)),
            # What evidence costs a camera thread at the summary's K (ring only; ring and a clip), and the ring's
            # memory for a 1080p 4 Mbit/s camera.
            ("evidence", lambda: evidence.main(["--results", str(out), *o])),
            # A camera thread's CPU per frame of a 1080p25 stream: a region against the whole frame, and four camera
            # entries sharing the stream (one decode) against one entry and against four streams of their own.
            ("regions", lambda: regions.main(["--repeats", "3", *o])),
            # What a sampled frame's conversion costs: swscale against the conversion graph on the CPU provider
            # (convert: cpu / graph), the conversion alone and through a camera's thread.
            ("convert", lambda: convert.main(["--repeats", "3", *o])),
            # The same sweep with one worker (the default: one run over all cores), side by side.
            ("e2e_one_worker", lambda: e2e.main([*sweep, "--workers", "1", *o])),
            # 64 cameras on any machine (on a slow one, far past saturation: most clips are dropped as stale, and
            # the extra cameras' decoding is what it costs).
            ("e2e_64", lambda: e2e.main(["--cameras", "64", *sweep, *per_core, *o])),
            # Files as fast as they decode (each camera paced by its consumer: no clip dropped).
            ("e2e_fast", lambda: e2e.main(["--fast", "--cameras", "1,4,16,64", *sweep, *per_core, *o])),
            # Up to saturation without decode: what the agent itself costs on top of the model.
            ("e2e_synthetic", lambda: e2e.main(["--synthetic", *sweep, *per_core, *o])),
            # The demo's network at twice its width (~2.5x the work per clip): how efficiency moves with model cost.
            ("e2e_wider", lambda: e2e.main(["--model", str(_wider_demo()), *repeat, *sweep, *per_core, *o])),
            ("offline", lambda: offline.main(["--archs", "slowfast_r50_4x16,tsn_r50", "--repeats", "2", *o])),
        ]
    # The GPU run; --smoke runs the very same steps on the CPU with tiny models and short windows.
    smoke = args.smoke
    device = "cpu" if smoke else "cuda"  # smoke: the same engine (ONNX Runtime), on the CPU
    size = ["--size", "64", "--tiny"] if smoke else []
    secs = (lambda s: "0.3") if smoke else str
    cams = (lambda ks: "2,4") if smoke else (lambda ks: ks)
    window = ["--seconds", "2", "--warmup", "1"] if smoke else ["--seconds", "8", "--warmup", "3"]
    sf = lambda: str(_fp16_model("slowfast_r50_4x16", smoke))  # noqa: E731 - exported by the first step

    def e2e_args(every: str, ks: str, source: list[str] | None = None) -> list[str]:
        return ["--model", sf(), *(source or ["--synthetic"]), "--device", device, "--every", every,
                "--cameras", cams(ks), "--max-batch", "32", *window, *o]  # fmt: skip

    def camera_1080p25() -> list[str]:  # PyAV's own encoder: the GPU image has no ffmpeg CLI
        from bench.common import test_video

        # Each loop restarts a camera's clip buffer (no clip spans the seam): 20 s keeps that gap to a tenth.
        video = test_video(4, 160, 120, 25) if smoke else test_video(20, 1920, 1080, 25)
        return ["--video", str(video), "--hwaccel", "auto"]

    def e2e_convert() -> dict:
        """K cameras of 1080p25 H.264 (NVDEC where PyAV can use it), SlowFast-R50 4x16 fp16 at one inference per
        second each: ``convert: cpu`` (swscale), then ``graph`` (on the GPU, frames and clips kept there), K swept
        until p99 capture→publish passes 500 ms or clips/s stops growing; each summary names the largest K within
        500 ms."""
        ks = cams("16,32,48,64,80,96,112,128,144,160")
        stop = [] if smoke else ["--stop-over-target", "--stop-when-saturated", "--seconds", "6"]
        return {
            mode: e2e.main([*e2e_args("1.0", ks, camera_1080p25()), "--convert", mode, *stop])
            for mode in ("cpu", "graph")
        }

    small = ["--small", "--frames", "8", "--seconds", "0.3", "--camera-seconds", "0.6", "--warmup", "0.4"]
    run = [
        (
            "model_slowfast",
            lambda: model.main(
                [
                    "--archs",
                    "slowfast_r50_4x16",
                    "--fp16",
                    "--batches",
                    "1,8,32",
                    "--device",
                    device,
                    "--seconds",
                    secs(4),
                    *size,
                    *o,
                ]
            ),
        ),  # fmt: skip
        # The headline measurement first: cameras × 1080p25 at one inference a second, convert cpu against graph.
        ("e2e_convert", e2e_convert),
        # What one sampled frame's conversion costs each way (swscale, the graph on the CPU, on CUDA, from NVDEC).
        (
            "convert",
            lambda: convert.main(
                [
                    *(small if smoke else ["--frames", "20", "--seconds", "1"]),
                    "--repeats",
                    "1",
                    "--camera-seconds",
                    "0.6" if smoke else "4",
                    *o,
                ]
            ),
        ),  # fmt: skip
        # Efficiency at batch 32: more clips than the model can take (every camera every 0.1 s), no decode.
        ("e2e_saturated", lambda: e2e.main(e2e_args("0.1", "32,64,96"))),
        # Cameras at one inference per second each, without decoding: how many the model side serves under p99
        # 500 ms (e2e_convert measures the same with 1080p25 decoding and conversion).
        ("e2e_cameras", lambda: e2e.main(e2e_args("1.0", "64,128,192,256,320"))),
        (
            "model_others",
            lambda: model.main(
                [
                    "--archs",
                    GPU_ARCHS.split(",", 1)[1],
                    "--fp16",
                    "--batches",
                    "1,32",
                    "--device",
                    device,
                    "--seconds",
                    secs(3),
                    *size,
                    *o,
                ]
            ),
        ),  # fmt: skip
    ]
    if not _importable("av"):
        run = [step for step in run if step[0] not in ("e2e_convert", "convert")]
    elif shutil.which("ffmpeg") and not smoke:
        run.append(("decode", lambda: decode.main(["--repeats", "1", *o])))
    return run


def _fp16_model(arch: str, tiny: bool = False) -> Path:
    from bench.model import model_file

    return model_file(arch, fp16=True, tiny=tiny, size=64 if tiny else 224)


def _wider_demo() -> Path:
    from bench.model import model_file

    return model_file("slowonly_r50_8x8", size=96, num_classes=9, width=32)


def _importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", action="store_true", help="the GPU measurement (bench/gpu.sh)")
    p.add_argument("--smoke", action="store_true", help="with --gpu: tiny models on the CPU, to test the script")
    p.add_argument("--out", type=Path, help="JSON lines file (default: bench/results/<device>.jsonl)")
    p.add_argument("--budget-s", type=float, default=float(os.environ.get("BENCH_BUDGET_S", 0)) or None)
    p.add_argument("--only", help="comma-separated step names")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    device = device_name()
    results = ROOT / (".cache/bench" if args.smoke else "bench/results")  # smoke numbers are not results
    out = args.out or results / f"{slug(device)}{'-smoke' if args.smoke else ''}.jsonl"
    if out.exists():
        out.unlink()
    emit = Emitter(out, device)
    mode = "gpu-smoke" if args.smoke else ("gpu" if args.gpu else "cpu")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    emit({"bench": "run", "mode": mode, "python": sys.version.split()[0], "versions": _versions(), "started": started})
    t0 = time.monotonic()
    failed, results = [], {}
    for name, step in steps(args, out):
        if args.only and name not in args.only.split(","):
            continue
        if args.budget_s and time.monotonic() - t0 > args.budget_s:
            emit({"bench": "skipped", "step": name, "reason": f"time budget {args.budget_s:g} s spent"})
            continue
        started = time.monotonic()
        try:
            results[name] = step()
        except Exception as e:  # one step failing must not lose the others' numbers
            traceback.print_exc()
            emit({"bench": "failed", "step": name, "error": f"{type(e).__name__}: {e}"[:500]})
            failed.append(name)
        print(f"# step {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    emit.close()
    if not args.no_plots:
        from bench import plots

        try:
            for path in plots.draw(plots.load(out), out.parent, out.stem):
                print(f"wrote {path}")
        except ImportError as e:
            print(f"no plots ({e})")
    print(f"results: {out} ({time.monotonic() - t0:.0f} s)")
    for line in summary_lines(results):
        print(line)
    return 1 if failed else 0


def summary_lines(results: dict) -> list[str]:
    """The lines a run ends with, from its steps' results: ``efficiency`` (the default engine's end-to-end
    summary), ``cpu backend speedup`` (OpenVINO ÷ ONNX Runtime's CPU provider, e2e at saturation) and, on the GPU,
    per ``convert`` the largest number of 1080p25 cameras within p99 500 ms."""
    lines = []
    for mode, s in (results.get("e2e_convert") or {}).items():
        if s:
            lines.append(
                f"convert {mode}: {s['max_cameras_within_target']} cameras within p99 {s['p99_target_ms']:g} ms "
                f"(of {s['saturated_cameras']} at saturation; CPU {s['cpu_cores_there']} cores, GPU "
                f"{s['gpu_util_percent_there']} %)"
            )
    summaries = [r for r in (results.get("e2e"), results.get("e2e_saturated")) if r]
    if summaries and summaries[0].get("efficiency") is not None:
        lines.append(f"efficiency: {summaries[0]['efficiency']:.2f}")
    if (results.get("cpu_backends") or {}).get("speedup") is not None:
        lines.append(f"cpu backend speedup: {results['cpu_backends']['speedup']:.2f}")
    return lines


def _versions() -> dict:
    versions = {}
    for name in ("onnxruntime", "openvino", "torch", "av", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:
            versions[name] = None
    try:
        import onnxruntime

        versions["providers"] = onnxruntime.get_available_providers()
    except Exception:
        pass
    return versions


if __name__ == "__main__":
    sys.exit(main())
