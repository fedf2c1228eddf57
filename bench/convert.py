"""What converting a sampled frame costs: swscale (``convert: cpu``) against the conversion graph (``convert: graph``)
on ONNX Runtime's CPU provider, and on its CUDA provider where it loads.

    python -m bench.convert [--frames 40] [--repeats 3] [--seconds 5]

``convert`` lines, per source and variant: the conversion alone, on decoded frames held in memory, one after the
other on one thread as a camera converts them: CPU µs per frame (the thread's CPU time) and wall µs per frame. The
sources are 1080p25 and 640x360 H.264 (to SlowFast-R50 4x16's input: the 224 crop of a 256 short side) and a
160x120 sub-stream (to the demo model's 96). Variants: ``swscale``; ``graph_cpu`` (the graph on the CPU provider,
reading the planes in place); where CUDA loads, ``graph_cuda`` (host planes uploaded, clips kept on the GPU) and,
where NVDEC decodes, ``graph_cuda_nvdec`` (frames read where the decoder left them).

``convert_camera`` lines: the agent's own camera (read, decode, sample, convert; ``bench.regions``' measurement) on
the 1080p25 stream in real time, the camera thread's CPU µs per decoded frame with ``convert: cpu`` and ``graph``
(on the CPU provider; and on CUDA where it loads, with NVDEC where it decodes). The variants alternate
``--repeats`` times; each line is a median with its runs. The summary gives ``graph_cpu_vs_swscale`` (CPU per
converted 1080p frame) and ``camera_graph_vs_cpu``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from pathlib import Path

import av
from av.codec.hwaccel import HWAccel

from agent.config import SourceConfig
from agent.frames import Converter
from agent.live.backends import cuda_loads
from agent.live.graphconvert import Conversion, GraphConverter
from agent.live.sources import HW_OPTIONS, Camera, hw_unavailable
from agent.metrics import Metrics
from agent.spec import ModelSpec
from bench.common import DEMO_ARCH, Emitter, ThreadCpu, test_video
from bench.decode import SLOWFAST_4X16

DEMO_SPEC = SLOWFAST_4X16.model_copy(
    update={
        "arch": "demo",
        "inputs": [{"name": "clip", "frames": 8, "stride_s": 8 / 30}],
        "size": DEMO_ARCH["size"],
        "resize_short": DEMO_ARCH["size"],
    }  # fmt: skip
)


def decoded(video: Path, n: int, on_gpu: bool = False) -> tuple[list[av.VideoFrame], str]:
    """The first ``n`` frames of ``video``, decoded (NVDEC's kept in GPU memory with ``on_gpu``), and its codec."""
    hw = HWAccel("cuda", allow_software_fallback=False, options=HW_OPTIONS, is_hw_owned=True) if on_gpu else None
    with av.open(str(video), hwaccel=hw) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame)
            if len(frames) == n:
                break
        return frames, container.streams.video[0].codec_context.name


def converters(spec: ModelSpec, codec: str) -> dict:
    out = {
        "swscale": Converter(spec, threads=1),
        "graph_cpu": GraphConverter(spec, Conversion("graph"), codec=lambda: codec),
    }
    if cuda_loads()[0]:
        graph = Conversion("graph", device="cuda", on_device=True)
        out["graph_cuda"] = GraphConverter(spec, graph, codec=lambda: codec)
    return out


def time_conversions(convert, frames: list, seconds: float) -> tuple[float, float]:
    """CPU and wall µs per frame, converting the frames in turn for about ``seconds`` (after one warm pass)."""
    for frame in frames[:3]:
        convert(frame)
    count, cpu0, wall0 = 0, time.thread_time(), time.perf_counter()
    while time.perf_counter() - wall0 < seconds or count < len(frames):
        convert(frames[count % len(frames)])
        count += 1
    return 1e6 * (time.thread_time() - cpu0) / count, 1e6 * (time.perf_counter() - wall0) / count


def conversion_runs(sources: dict, frames: int, seconds: float, repeats: int) -> dict[tuple[str, str], list]:
    runs: dict[tuple[str, str], list] = {}
    for _ in range(repeats):
        for source, (video, spec) in sources.items():
            held, codec = decoded(video, frames)
            variants = converters(spec, codec)
            if "graph_cuda" in variants and hw_unavailable("cuda") is None:
                on_gpu, _ = decoded(video, frames, on_gpu=True)
                variants["graph_cuda_nvdec"] = (variants["graph_cuda"], on_gpu)
            for name, convert in variants.items():
                convert, these = convert if isinstance(convert, tuple) else (convert, held)
                runs.setdefault((source, name), []).append(time_conversions(convert, these, seconds))
    return runs


async def _camera(video: Path, conversion: Conversion | None, hwaccel: str, seconds: float, warmup: float) -> float:
    """The camera thread's CPU µs per decoded frame of a real-time 1080p25 stream."""
    config = SourceConfig(name="cam", url=str(video), loop=True, decode_threads=1, every_s=1.0, hwaccel=hwaccel)
    metrics = Metrics()
    camera = Camera(config, SLOWFAST_4X16, metrics, **({"conversion": conversion} if conversion else {}))

    async def drain() -> None:
        async for _ in camera.clips():
            pass

    async with camera:
        task = asyncio.create_task(drain())
        await asyncio.sleep(warmup)
        frames0 = metrics.value("actionstream_frames_decoded_total", camera="cam")
        cpu = ThreadCpu(lambda name: "cameras" if name.startswith("source-") else "other")
        await asyncio.sleep(seconds)
        used, wall = cpu.percent().get("cameras", 0.0), time.perf_counter() - cpu.t0
        frames = metrics.value("actionstream_frames_decoded_total", camera="cam") - frames0
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return round(1e4 * used * wall / frames, 1) if frames else float("nan")


def camera_variants() -> dict[str, tuple[Conversion | None, str]]:
    out: dict[str, tuple[Conversion | None, str]] = {"cpu": (None, "off"), "graph_cpu": (Conversion("graph"), "off")}
    if cuda_loads()[0]:
        on_gpu = Conversion("graph", device="cuda", on_device=True)
        out["graph_cuda"] = (on_gpu, "off")
        if hw_unavailable("cuda") is None:
            out["cpu_nvdec"] = (None, "cuda")
            out["graph_cuda_nvdec"] = (on_gpu, "cuda")
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=40, help="decoded frames held per source")
    p.add_argument("--seconds", type=float, default=2.0, help="per conversion variant and run")
    p.add_argument("--camera-seconds", type=float, default=5.0, help="measured window per camera run (0: none)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--small", action="store_true", help="sub-stream sizes only (tests)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    emit = Emitter(args.out)
    try:
        hd = test_video(4 if args.small else 20, *((320, 180) if args.small else (1920, 1080)), 25)
        sources = {
            "1080p_to_224": (hd, SLOWFAST_4X16),
            "360p_to_224": (test_video(4, 640, 360, 25), SLOWFAST_4X16),
            "120p_to_96": (test_video(4, 160, 120, 15), DEMO_SPEC),
        }
        if args.small:
            sources = {"180p_to_224": (hd, SLOWFAST_4X16), "120p_to_96": sources["120p_to_96"]}
        us = {}
        for (source, variant), runs in conversion_runs(sources, args.frames, args.seconds, args.repeats).items():
            cpu, wall = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            us[source, variant] = cpu
            emit({"bench": "convert", "source": source, "variant": variant, "cpu_us_per_frame": round(cpu, 1),
                  "wall_us_per_frame": round(wall, 1), "runs_cpu_us": [round(r[0], 1) for r in runs]})  # fmt: skip
        camera: dict[str, float] = {}
        if args.camera_seconds > 0:
            runs_by: dict[str, list[float]] = {}
            for _ in range(args.repeats):
                for name, (conversion, hwaccel) in camera_variants().items():
                    run = asyncio.run(_camera(hd, conversion, hwaccel, args.camera_seconds, args.warmup))
                    runs_by.setdefault(name, []).append(run)
            for name, values in runs_by.items():
                camera[name] = statistics.median(values)
                emit({"bench": "convert_camera", "variant": name, "video": hd.name, "seconds": args.camera_seconds,
                      "cpu_us_per_decoded_frame": camera[name], "runs": values})  # fmt: skip
        first = next(iter(sources))
        summary = {"bench": "convert_summary",
                   "graph_cpu_vs_swscale": round(us[first, "graph_cpu"] / us[first, "swscale"], 3)}  # fmt: skip
        if camera:
            summary["camera_graph_vs_cpu"] = round(camera["graph_cpu"] / camera["cpu"], 3)
        return emit(summary)
    finally:
        emit.close()


if __name__ == "__main__":
    main()
