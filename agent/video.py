"""Offline clips from a video file (``actionstream infer``): sample by timestamp, convert only used frames."""

from __future__ import annotations

from collections.abc import Iterator
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
    return list(iter_clips(path, spec, ends))


def iter_clips(
    path: str | Path, spec: ModelSpec, ends: list[float] | None = None, times: np.ndarray | None = None
) -> Iterator[Clip]:
    """Clips ending at ``ends``, in that order, from one decoding pass (``times``: :func:`frame_times` of the file,
    when the caller has it). A converted frame is kept only until the last clip that uses it has been yielded, so
    with ascending ``ends`` memory stays at a few clips however long the video."""
    path = Path(path)
    times = frame_times(path) if times is None else times
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    ends = [float(sorted_times[-1])] if ends is None else ends
    picks = [{k: order[v] for k, v in sample_indices(spec, sorted_times, end).items()} for end in ends]
    needs = [{int(i) for v in p.values() for i in v} for p in picks]
    last_use = {i: n for n, wanted in enumerate(needs) for i in wanted}  # the last clip (in order) using frame i
    converted: dict[int, np.ndarray] = {}
    reformatter = VideoReformatter()
    done = 0  # clips yielded
    with _open(path) as container:
        frames = enumerate(container.decode(container.streams.video[0]))
        while done < len(picks):
            if needs[done] <= converted.keys():
                yield Clip(
                    end=ends[done], inputs={k: np.stack([converted[int(i)] for i in v]) for k, v in picks[done].items()}
                )
                for i in needs[done]:
                    if last_use[i] == done:
                        del converted[i]
                done += 1
                continue
            try:
                index, frame = next(frames)
            except (StopIteration, av.FFmpegError):  # frame_times stopped at the same frame: not for a wanted one
                raise VideoError(f"{path}: ended before the frames of the clip ending at {ends[done]:.3f} s") from None
            if index in last_use:
                converted[index] = to_model_rgb(
                    frame, resize_short=spec.resize_short, size=spec.crop_size, reformatter=reformatter
                )


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
