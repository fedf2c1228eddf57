"""Offline clips from a video file (``actionstream infer``): sample by timestamp, convert only used frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from agent.clips import sample_indices
from agent.frames import best_effort_times, to_model_rgb
from agent.spec import ModelSpec


class VideoError(ValueError):
    """A video that cannot be read; the message names the file."""


@dataclass(frozen=True)
class Clip:
    end: float  # seconds, presentation time of the newest frame
    inputs: dict[str, np.ndarray]  # name -> uint8 [T, size, size, 3]


def frame_times(path: str | Path) -> np.ndarray:
    """Best-effort presentation times (s) of every decodable frame, in decoding order."""
    path = Path(path)
    pts: list[int | None] = []
    dts: list[int | None] = []
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        time_base = float(stream.time_base or 1 / rate)
        try:
            for frame in container.decode(stream):
                pts.append(frame.pts)
                dts.append(frame.dts)
        except av.FFmpegError as e:
            if not pts:
                raise VideoError(f"{path}: no decodable video frames ({e})") from None
    if not pts:
        raise VideoError(f"{path}: no decodable video frames")
    ticks = best_effort_times(pts, dts)
    return np.asarray([i / rate if t is None else t * time_base for i, t in enumerate(ticks)], dtype=np.float64)


def read_clips(path: str | Path, spec: ModelSpec, ends: list[float] | None = None) -> list[Clip]:
    """Clips ending at ``ends`` (seconds; default: one clip ending at the last frame)."""
    path = Path(path)
    times = frame_times(path)
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    ends = [float(sorted_times[-1])] if ends is None else ends
    picks = [{k: order[v] for k, v in sample_indices(spec, sorted_times, end).items()} for end in ends]
    wanted = {int(i) for p in picks for v in p.values() for i in v}
    converted: dict[int, np.ndarray] = {}
    reformatter = VideoReformatter()
    with _open(path) as container:
        try:
            for index, frame in enumerate(container.decode(container.streams.video[0])):
                if index in wanted:
                    converted[index] = to_model_rgb(
                        frame, resize_short=spec.resize_short, size=spec.crop_size, reformatter=reformatter
                    )
                if len(converted) == len(wanted):
                    break
        except av.FFmpegError:
            pass  # the first pass already stopped at the same frame
    return [
        Clip(end=end, inputs={k: np.stack([converted[int(i)] for i in v]) for k, v in p.items()})
        for end, p in zip(ends, picks, strict=True)
    ]


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    try:
        container = av.open(str(path), mode="r", timeout=(10.0, 10.0))
    except av.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video ({e})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container
