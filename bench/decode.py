"""Decode cost of one source: ffmpeg alone vs PyAV decode, decode + convert all, decode + convert sampled only.

    python -m bench.decode [VIDEO] [--repeats 3] [--threads 1]

Prints one JSON line per variant (median fps over the repeats) and a summary line with the ratios we track:
``sampled_vs_ffmpeg`` (our per-camera ingest cost against the decoder's floor) and ``sampled_vs_all``. Without
VIDEO a 10 s 1080p25 H.264 test pattern is generated under .cache/bench/ (needs the ffmpeg CLI).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import time
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter

from agent.frames import to_model_rgb
from agent.live.clips import ClipBuffer
from agent.spec import ModelSpec
from bench.common import Emitter

ROOT = Path(__file__).resolve().parents[1]
SLOWFAST_4X16 = ModelSpec(
    arch="slowfast_r50_4x16",
    labels=["x"],
    inputs=[{"name": "slow", "frames": 4, "stride_s": 16 / 30}, {"name": "fast", "frames": 32, "stride_s": 2 / 30}],
    size=224,
    resize_short=256,
    mean=(123.675, 116.28, 103.53),
    std=(58.395, 57.12, 57.375),
    source={"exported_by": "bench"},
)


def default_video(seconds: int = 10) -> Path:
    path = ROOT / ".cache" / "bench" / f"testsrc2_1080p25_{seconds}s.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25", "-t", str(seconds)]
            + ["-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p", str(path)],
            check=True,
        )
    return path


def ffmpeg_null(video: Path, threads: int) -> tuple[int, float]:
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-threads", str(threads), "-i", str(video), "-an", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    frames = int(re.findall(r"frame=\s*(\d+)", out.stderr)[-1])
    return frames, 0.0  # timed by the caller


def pyav(video: Path, threads: int, mode: str) -> int:
    spec = SLOWFAST_4X16
    reformatter = VideoReformatter()  # as the agent's cameras: swscale's context kept between frames, one thread

    def convert(frame):
        return to_model_rgb(frame, resize_short=spec.resize_short, size=spec.size, reformatter=reformatter, threads=1)

    buffer = ClipBuffer(spec, convert, every_s=1.0)
    frames = 0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_count = threads
        for frame in container.decode(stream):
            frames += 1
            if mode == "convert_all":
                convert(frame)
            elif mode == "convert_sampled":
                buffer.push(frame, frame.time, time.time())
    return frames


def timed(fn, repeats: int) -> tuple[int, float]:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        frames = fn()
        runs.append(time.perf_counter() - t0)
    frames = frames[0] if isinstance(frames, tuple) else frames
    return frames, statistics.median(runs)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video", nargs="?", type=Path)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="decoder threads (1 = per-core cost)")
    p.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = p.parse_args(argv)
    emit = Emitter(args.out)
    video = args.video or default_video()
    variants = {
        "ffmpeg_null": lambda: ffmpeg_null(video, args.threads),
        "pyav_decode": lambda: pyav(video, args.threads, "decode"),
        "pyav_convert_all": lambda: pyav(video, args.threads, "convert_all"),
        "pyav_convert_sampled": lambda: pyav(video, args.threads, "convert_sampled"),
    }
    fps = {}
    for name, fn in variants.items():
        frames, seconds = timed(fn, args.repeats)
        fps[name] = frames / seconds
        record = {"bench": "decode", "variant": name, "video": video.name, "frames": frames}
        record |= {"median_s": round(seconds, 4), "fps": round(fps[name], 1), "threads": args.threads}
        emit(record)
    summary = {
        "bench": "decode",
        "variant": "summary",
        "sampled_vs_ffmpeg": round(fps["pyav_convert_sampled"] / fps["ffmpeg_null"], 3),
        "sampled_vs_all": round(fps["pyav_convert_sampled"] / fps["pyav_convert_all"], 3),
        "decode_vs_ffmpeg": round(fps["pyav_decode"] / fps["ffmpeg_null"], 3),
    }
    emit(summary)
    emit.close()
    return summary


if __name__ == "__main__":
    main()
