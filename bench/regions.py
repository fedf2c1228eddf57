"""What regions and shared streams cost a camera's thread, on a 1080p25 H.264 stream.

    python -m bench.regions [--seconds 10] [--warmup 2] [--repeats 3]

Each variant runs the agent's own cameras (:class:`agent.live.sources.Stream` and :class:`~agent.live.sources.Camera`:
read, decode, sample, convert) on one looping 1080p25 file played in real time (``decode_threads`` 1), for a
SlowFast-R50 4x16 spec (224 crop of a 256 short side: the fast input converts most frames), each entry's clips
taken by a consumer that does nothing else, and reports the camera threads' CPU per frame of the stream
(``cpu_us_per_stream_frame``: their CPU seconds ÷ the frames one stream decoded in the window):

- ``full``: one entry, the whole frame; ``region_quarter`` and ``region_tenth``: one entry whose region is a quarter
  and a tenth of the frame (cut without a copy, then resized in the same swscale pass);
- ``shared_4``: four entries on the one stream (its four quarters, ``every_s`` 0.5, 1, 1 and 2): one decode;
- ``separate_4``: four cameras, each its own stream of the same file (what four entries cost without sharing).

The variants alternate ``--repeats`` times (a shared host's load drifts); each line is a variant's median and runs,
and the summary gives ``region_vs_full`` (the quarter region's CPU per frame ÷ the whole frame's: 1 within noise, or
below), ``shared_4_vs_one`` (four shared entries ÷ one entry: under 1.3 when the stream is decoded once) and
``separate_4_vs_one``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from pathlib import Path

from agent.config import parse_config
from agent.live.sources import Camera, Stream
from agent.metrics import Metrics
from bench.common import Emitter, ThreadCpu, stream_links, test_video
from bench.decode import SLOWFAST_4X16

QUARTERS = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]]
VARIANTS: dict[str, list[dict]] = {
    "full": [{}],
    "region_quarter": [{"region": [0.25, 0.25, 0.75, 0.75]}],
    "region_tenth": [{"region": [0.55, 0.55, 0.87, 0.87]}],
    "shared_4": [{"region": q, "every_s": e} for q, e in zip(QUARTERS, (0.5, 1.0, 1.0, 2.0), strict=True)],
    "separate_4": [
        {"region": q, "every_s": e, "own": True} for q, e in zip(QUARTERS, (0.5, 1.0, 1.0, 2.0), strict=True)
    ],
}


async def _run(video: Path, entries: list[dict], seconds: float, warmup: float) -> dict:
    links = stream_links(video, len(entries), "regions-cameras")
    own = [link if e.get("own") else video for e, link in zip(entries, links, strict=True)]
    cameras = [
        {"name": f"cam{i}", "url": str(url), "loop": True, "decode_threads": 1, "every_s": 1.0}
        | {k: v for k, v in e.items() if k != "own"}
        for i, (e, url) in enumerate(zip(entries, own, strict=True))
    ]
    config = parse_config({"cameras": cameras, "models": {"m": {"path": "unused.onnx"}}})
    metrics = Metrics()
    streams = {}
    for key, group in config.streams().items():
        streams[key] = Stream(group[0], metrics, cameras=[c.name for c in group])
    entry_cameras = [Camera(c, SLOWFAST_4X16, metrics, streams[c.stream_url()]) for c in config.cameras]
    firsts = [group[0].name for group in config.streams().values()]

    def frames() -> float:
        return sum(metrics.value("actionstream_frames_decoded_total", camera=name) for name in firsts)

    async def drain(camera: Camera) -> None:
        async for _ in camera.clips():
            pass

    async with contextlib.AsyncExitStack() as stack:
        for camera in entry_cameras:
            await stack.enter_async_context(camera)
        tasks = [asyncio.create_task(drain(c)) for c in entry_cameras]
        await asyncio.sleep(warmup)
        frames0 = frames()
        cpu = ThreadCpu(lambda name: "cameras" if name.startswith("source-") else "other")
        await asyncio.sleep(seconds)
        used = cpu.percent().get("cameras", 0.0)
        wall = time.perf_counter() - cpu.t0
        decoded = frames() - frames0
        sampled = sum(metrics.value("actionstream_frames_sampled_total", camera=c.name) for c in config.cameras)
        for task in tasks:
            task.cancel()
    per_stream = decoded / len(firsts)
    return {
        "streams": len(firsts),
        "entries": len(entry_cameras),
        "cpu_percent_cameras": round(used, 1),
        "cpu_us_per_stream_frame": round(1e4 * used * wall / per_stream, 1) if per_stream else None,
        "frames_per_stream": int(per_stream),
        "frames_sampled": int(sampled),
    }


def measure(video: Path, seconds: float, warmup: float, repeats: int) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name, entries in VARIANTS.items():
            runs[name].append(asyncio.run(_run(video, entries, seconds, warmup)))
    return runs


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", type=Path, help="default: a 20 s 1080p25 H.264 test pattern (PyAV's encoder), cached")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    emit = Emitter(args.out)
    try:
        video = args.video or test_video(20, 1920, 1080, 25)
        runs = measure(video, args.seconds, args.warmup, args.repeats)
        us = {}
        for name, results in runs.items():
            values = [r["cpu_us_per_stream_frame"] for r in results]
            us[name] = statistics.median(values)
            head = {"bench": "regions", "variant": name, "video": video.name, "streams": results[0]["streams"]}
            emit(
                head
                | {"entries": results[0]["entries"], "seconds": args.seconds, "repeats": args.repeats}
                | {"cpu_us_per_stream_frame": us[name], "runs": values}
                | {"cpu_percent_cameras": statistics.median(r["cpu_percent_cameras"] for r in results)}
                | {"frames_sampled_per_run": statistics.median(r["frames_sampled"] for r in results)}
            )
        return emit(
            {
                "bench": "regions_summary",
                "region_vs_full": round(us["region_quarter"] / us["full"], 3),
                "region_tenth_vs_full": round(us["region_tenth"] / us["full"], 3),
                "shared_4_vs_one": round(us["shared_4"] / us["full"], 3),
                "separate_4_vs_one": round(us["separate_4"] / us["full"], 3),
            }
        )
    finally:
        emit.close()


if __name__ == "__main__":
    main()
