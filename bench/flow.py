"""What a flow model costs a camera: optical flow per field, by method and size, next to decode and conversion.

    python -m bench.flow [--methods tvl1,farneback,dis] [--fields 6] [--repeats 3] [--threads 0,1]

Sizes (the frames the flow is computed on, as the agent computes it: resized as the model's frames, not cropped):
``demo`` — the demo's 160x120 sub-stream at the demo model's short side 110 (147x110); ``224x224``; ``455x256`` — a
16:9 camera for a 224-crop flow model (short side 256, the flow is taken before the crop). The frames come from a
synthetic motion clip (textured scene, a moving shape, sensor noise; rendered once into .cache/bench/).

One JSON line per (size, stage): ``decode`` (PyAV, one thread, ms per decoded frame), ``convert`` (resize to the
flow size, RGB, then grey, ms per converted frame), and per method and OpenCV thread count (0: OpenCV's default,
one per core; 1: one thread) ``flow`` (ms per field: one pair of frames, quantised and cropped as the agent does).
The median over ``--repeats`` runs of ``--fields`` consecutive pairs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter

from agent.flow import FlowEstimator, centre_crop, cv2_module, grey
from agent.frames import to_model_rgb
from agent.spec import FLOW_METHODS
from bench.common import CACHE, Emitter

# name → (source video width, height, resize_short, resize_to, crop): what each size's frames are made from
SIZES = {
    "demo": (160, 120, 110, None, 96),
    "224x224": (640, 360, 224, (224, 224), 224),
    "455x256": (640, 360, 256, None, 224),
}


def motion_video(width: int, height: int) -> Path:
    """A 3 s synthetic motion clip (move_right) at this size, 30 fps, cached."""
    from agent.demo.synthetic import write_motion_clip

    path = CACHE / f"motion_{width}x{height}_30fps_3s.mp4"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.part.mp4")
        write_motion_clip(tmp, "move_right", seconds=3.0, fps=30, width=width, height=height, seed=7)
        tmp.rename(path)
    return path


def decoded(video: Path) -> tuple[list[av.VideoFrame], float]:
    """Every frame of ``video`` and the median ms per frame decoding it (one thread)."""
    runs, frames = [], []
    for _ in range(3):
        frames = []
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            t0 = time.perf_counter()
            frames = list(container.decode(stream))
            runs.append((time.perf_counter() - t0) * 1000 / len(frames))
    return frames, statistics.median(runs)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(FLOW_METHODS))
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--fields", type=int, default=6, help="consecutive pairs per run (default 6)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", default="0,1", help="OpenCV thread counts (0: its default, one per core)")
    p.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = p.parse_args(argv)
    emit = Emitter(args.out)
    cv2 = cv2_module()
    default_threads = cv2.getNumThreads()
    records = []
    try:
        for size in args.sizes.split(","):
            width, height, short, resize_to, crop = SIZES[size]
            frames, decode_ms = decoded(motion_video(width, height))
            reformatter = VideoReformatter()
            picks = frames[10 : 10 + args.fields + 1]
            runs, greys = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                greys = [
                    grey(to_model_rgb(f, resize_short=short, size=None, reformatter=reformatter, threads=1,
                                      resize_to=resize_to))
                    for f in picks
                ]  # fmt: skip
                runs.append((time.perf_counter() - t0) * 1000 / len(picks))
            shape = f"{greys[0].shape[1]}x{greys[0].shape[0]}"
            base = {"bench": "flow", "size": size, "flow_size": shape, "source": f"{width}x{height}"}
            for stage, ms in (("decode", decode_ms), ("convert", statistics.median(runs))):
                records.append(emit(base | {"stage": stage, "ms_per_frame": round(ms, 3)}))
            for method in args.methods.split(","):
                for threads in (int(t) for t in args.threads.split(",")):
                    cv2.setNumThreads(threads if threads > 0 else default_threads)
                    estimator = FlowEstimator(method)
                    estimator(greys[0], greys[1])  # first call: allocations
                    runs = []
                    for _ in range(args.repeats):
                        t0 = time.perf_counter()
                        for a, b in zip(greys[:-1], greys[1:], strict=True):
                            centre_crop(estimator(a, b), crop).copy()
                        runs.append((time.perf_counter() - t0) * 1000 / (len(greys) - 1))
                    record = base | {"stage": "flow", "method": method, "threads": threads or default_threads}
                    records.append(emit(record | {"ms_per_field": round(statistics.median(runs), 3)}))
    finally:
        cv2.setNumThreads(default_threads)
        emit.close()
    return records


if __name__ == "__main__":
    main()
