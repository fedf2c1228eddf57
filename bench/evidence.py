"""What evidence costs: a camera thread's CPU with evidence on and off, and the packet ring's memory.

    python -m bench.evidence [--cameras K] [--seconds 10] [--repeats 2] [--pre-s 5]

**CPU**: K cameras (:class:`agent.live.sources.Camera`, the agent's own: read, decode, sample and convert) play the
e2e step's sub-stream (160x120, 15 fps H.264, looping in real time, ``decode_threads`` 1, a clip every 0.25 s taken by
a consumer that does nothing else) three ways: evidence off; the ring only (each camera's packets go through a
:class:`agent.live.evidence.recorder.Recorder`, what every camera pays all the time); the ring and a clip that every
camera records for the whole window (a remux into an MP4 on disk, the most a camera ever does). The three alternate
``--repeats`` times; the line gives the cameras' threads' CPU per decoded frame each way (medians) and the overheads
in percent. K defaults to the e2e step's
summary K when ``--results`` names a results file that has one, else 16.

**Memory**: a 1080p25 H.264 stream at 4 Mbit/s (GOP 2 s), fed packet by packet, at its own pace, into a recorder
that keeps ``pre_s`` + 3 s (the agent's ring for the default events settings: ``min_hits`` 2 at ``every_s`` 1, plus
2 s); the line gives the ring's largest size in bytes and what Python allocated for it at its peak (tracemalloc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import av
import numpy as np

from agent.config import SourceConfig
from agent.live.evidence.recorder import Recorder
from agent.live.sources import Camera
from agent.metrics import Metrics
from agent.spec import load_spec
from bench.common import DEMO_MODEL, Emitter, ThreadCpu

DECIDE_S = 3.0  # (min_hits - 1) x every_s + 2 s with the default events settings


def encode(path: Path, seconds: int, width: int, height: int, fps: int, options: dict[str, str]) -> Path:
    """A moving pattern as H.264 (PyAV's encoder)."""
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        for i in range(seconds * fps):
            rgb = np.empty((height, width, 3), np.uint8)
            rgb[..., 0] = (xx + 4 * i) % 256
            rgb[..., 1] = (yy + 2 * i) % 256
            rgb[..., 2] = ((xx // 32 + yy // 32 + i // 5) % 2) * 200
            rgb[(yy - i * 3) % height < 8] = 255  # a moving bar: detail that costs bits
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


async def _cameras(video: Path, k: int, seconds: float, warmup: float, evidence: Path | None, record: bool) -> dict:
    spec = load_spec(DEMO_MODEL)
    metrics = Metrics()
    cameras, recorders = [], []
    for i in range(k):
        config = SourceConfig(name=f"cam{i}", url=str(video), loop=True, every_s=0.25, decode_threads=1)
        camera = Camera(config, spec, metrics)
        if evidence is not None:
            recorder = Recorder(config.name, history_s=5 + DECIDE_S, ring_bytes=64_000_000, max_clip_s=3600,
                                done=lambda f: None)  # fmt: skip
            camera.source.taps.append(recorder)
            recorders.append(recorder)
        cameras.append(camera)

    async def drain(camera: Camera) -> None:
        async for _ in camera.clips():
            pass

    async with contextlib.AsyncExitStack() as stack:
        for camera in cameras:
            await stack.enter_async_context(camera)
        tasks = [asyncio.create_task(drain(c)) for c in cameras]
        await asyncio.sleep(warmup)
        for i, recorder in enumerate(recorders if record else []):  # every camera records through the window
            assert evidence is not None
            recorder.start(f"cam{i}-clip", time.time() - 5, evidence / f"cam{i}.mp4")
        frames0 = sum(metrics.value("actionstream_frames_decoded_total", camera=f"cam{i}") for i in range(k))
        cpu = ThreadCpu(lambda name: "cameras" if name.startswith("source-") else "other")
        await asyncio.sleep(seconds)
        used = cpu.percent().get("cameras", 0.0)
        wall = time.perf_counter() - cpu.t0
        frames = sum(metrics.value("actionstream_frames_decoded_total", camera=f"cam{i}") for i in range(k)) - frames0
        for recorder in recorders:
            recorder.stop()
        for task in tasks:
            task.cancel()
    written = sum(p.stat().st_size for p in evidence.glob("*.mp4")) if evidence is not None else 0
    return {
        "cpu_percent_cameras": round(used, 1),
        "camera_cpu_us_per_frame": round(1e4 * used * wall / frames, 1) if frames else None,
        "frames": int(frames),
        "clip_bytes": written,
    }


def camera_cpu(k: int, seconds: float, repeats: int, warmup: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as tmp:
        work = Path(tmp)
        video = encode(work / "sub.mp4", 30, 160, 120, 15, {"preset": "veryfast", "g": "30"})
        off, ring, on = [], [], []
        for i in range(repeats):
            off.append(asyncio.run(_cameras(video, k, seconds, warmup, None, False)))
            ring.append(asyncio.run(_cameras(video, k, seconds, warmup, work, False)))
            clips = work / f"clips{i}"
            clips.mkdir()
            on.append(asyncio.run(_cameras(video, k, seconds, warmup, clips, True)))
    us_off = statistics.median(r["camera_cpu_us_per_frame"] for r in off)
    us_ring = statistics.median(r["camera_cpu_us_per_frame"] for r in ring)
    us_on = statistics.median(r["camera_cpu_us_per_frame"] for r in on)
    return {
        "bench": "evidence_cpu",
        "cameras": k,
        "seconds": seconds,
        "repeats": repeats,
        "camera_cpu_us_per_frame_off": us_off,
        "camera_cpu_us_per_frame_ring": us_ring,
        "camera_cpu_us_per_frame_on": us_on,
        "overhead_percent_ring": round(100 * (us_ring - us_off) / us_off, 1) if us_off else None,
        "overhead_percent": round(100 * (us_on - us_off) / us_off, 1) if us_off else None,
        "cpu_percent_cameras_off": statistics.median(r["cpu_percent_cameras"] for r in off),
        "cpu_percent_cameras_on": statistics.median(r["cpu_percent_cameras"] for r in on),
        "clip_bytes_per_camera_s": round(statistics.median(r["clip_bytes"] for r in on) / (k * seconds)),
        "runs_off": [r["camera_cpu_us_per_frame"] for r in off],
        "runs_ring": [r["camera_cpu_us_per_frame"] for r in ring],
        "runs_on": [r["camera_cpu_us_per_frame"] for r in on],
    }


def ring_memory(pre_s: float, seconds: int = 16, width: int = 1920, height: int = 1080) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as tmp:
        options = {"preset": "ultrafast", "g": "50", "b": "4M", "maxrate": "4M", "bufsize": "8M"}
        video = encode(Path(tmp) / "main.mp4", seconds, width, height, 25, options)
        recorder = Recorder("main", history_s=pre_s + DECIDE_S, ring_bytes=64_000_000, max_clip_s=300,
                            done=lambda f: None)  # fmt: skip
        largest = 0
        tracemalloc.start()
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            recorder.opened(stream)
            total = 0
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                total += packet.size
                recorder.packet(packet, float(packet.dts * stream.time_base))
                largest = max(largest, recorder._bytes)
            _, peak = tracemalloc.get_traced_memory()
            recorder.closed()
        tracemalloc.stop()
    return {
        "bench": "evidence_ring",
        "width": width,
        "height": height,
        "fps": 25,
        "mbit_per_s": round(8 * total / seconds / 1e6, 2),
        "gop_s": 2.0,
        "pre_s": pre_s,
        "history_s": pre_s + DECIDE_S,
        "ring_bytes_max": largest,
        "ring_mb_max": round(largest / 1e6, 2),
        "python_peak_mb": round(peak / 1e6, 2),
    }


def summary_k(results: Path | None) -> int | None:
    if results is None or not results.exists():
        return None
    found = None
    for line in results.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("bench") == "e2e_summary" and record.get("decode") != "synthetic":
                found = record.get("cameras")
    return found


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cameras", type=int, help="K (default: the e2e summary's K in --results, else 16)")
    p.add_argument("--results", type=Path, help="a results file whose e2e summary gives K")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--pre-s", type=float, default=5.0)
    p.add_argument("--ring-seconds", type=int, default=16, help="length of the 1080p stream fed to the ring")
    p.add_argument("--ring-size", default="1920x1080", help="its width x height")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    emit = Emitter(args.out)
    try:
        k = args.cameras or summary_k(args.results) or 16
        cpu = emit(camera_cpu(k, args.seconds, args.repeats, args.warmup))
        width, height = (int(v) for v in args.ring_size.split("x"))
        memory = emit(ring_memory(args.pre_s, args.ring_seconds, width, height))
        return [cpu, memory]
    finally:
        emit.close()


if __name__ == "__main__":
    main()
