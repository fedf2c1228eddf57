"""Offline clips from a video file (``actionstream infer``): sample by timestamp, convert only used frames.

Flow models: the frames of each flow field's pair (:func:`agent.flow.chain_indices`, as live) are converted (the
model's resize, grey) and their flow computed (:class:`agent.flow.FlowMaker`, each pair once)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from agent.errors import VideoError
from agent.flow import FlowMaker, chain_indices, grey
from agent.frames import Converter, best_effort_times
from agent.geometry import FULL, Box
from agent.live.clips import EPS_S, sample_indices
from agent.spec import ModelSpec

log = logging.getLogger("actionstream.video")


@dataclass(frozen=True)
class Window:
    """A file's clip for one model run: what the live path's :class:`agent.live.clips.Clip` is for a camera."""

    end: float  # seconds, presentation time of the newest frame
    inputs: dict[str, np.ndarray]  # name -> uint8 [T, size, size, 3]
    region: Box = FULL  # the part of the upright frame the inputs show (``--region``, rounded to pixels)


def frame_times(path: str | Path, *, decode: bool = False) -> np.ndarray:
    """Best-effort presentation times (s) of every decodable frame, in the order the decoder returns them.

    Read from the packets, without decoding, when the container gives each packet its own pts (AVI does not:
    its pts are guesses in decoding order): a decoder returns those frames in pts order, and :func:`iter_clips`
    checks every frame it decodes against these times. Otherwise, or with ``decode``, from a decoding pass.
    """
    path = Path(path)
    if not decode and (times := _packet_times(path)) is not None:
        return times
    pts: list[int | None] = []
    dts: list[int | None] = []
    with _open(path) as container:
        stream = container.streams.video[0]
        rate, time_base = _rates(stream)
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


def _packet_times(path: Path) -> np.ndarray | None:
    """Frame times from the packets' pts in display order, or None when the packets cannot tell them."""
    with _open(path) as container:
        if "avi" in container.format.name.split(","):
            return None
        stream = container.streams.video[0]
        _, time_base = _rates(stream)
        try:
            pts = [p.pts for p in container.demux(stream) if p.size and not p.is_discard]
        except av.FFmpegError:
            return None
    known = [t for t in pts if t is not None]
    if not known or len(known) < len(pts) or len(set(known)) < len(known):
        return None
    return np.asarray([t * time_base for t in sorted(known)], dtype=np.float64)


def _rates(stream: av.video.stream.VideoStream) -> tuple[float, float]:
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    return rate, float(stream.time_base or 1 / rate)


def read_clips(
    path: str | Path,
    spec: ModelSpec,
    ends: list[float] | None = None,
    converter: Converter | None = None,
    *,
    flow_method: str | None = None,
) -> list[Window]:
    """Clips ending at ``ends`` (seconds; default: one clip ending at the last frame). ``flow_method``: flow models'
    flow made another way than the spec's (``dis``, say)."""
    return list(iter_clips(path, spec, ends, converter=converter, flow_method=flow_method))


class _TimesDiffer(Exception):
    """A decoded frame's time is not the one the clips were planned with, or decoding ended before a wanted frame."""


def iter_clips(
    path: str | Path,
    spec: ModelSpec,
    ends: list[float] | None = None,
    times: np.ndarray | None = None,
    converter: Converter | None = None,
    *,
    flow_method: str | None = None,
) -> Iterator[Window]:
    """Clips ending at ``ends``, in that order, from one decoding pass (``times``: :func:`frame_times` of the file,
    when the caller has it). Frames are converted by ``converter`` (a region, a mask; default: the spec's resize and
    crop of the whole frame; a flow model's frames are not cropped, its flow is). A converted frame is kept only
    until the last clip that uses it has been yielded, so with ascending ``ends`` memory stays at a few clips however
    long the video.

    When a decoded frame's time differs from ``times`` (the packets promised other frames), the rest is planned
    again from a decoding pass; clips already yielded are checked to be the same under it. A file whose decoder
    stops early (damaged) gives the clips it can: ends past its last decodable frame are skipped, with a warning.
    """
    path = Path(path)
    times = frame_times(path) if times is None else times
    ends = [float(times.max())] if ends is None else list(ends)
    done = 0
    maker = FlowMaker(spec, method=flow_method) if spec.flow_input is not None else None
    converter = converter or Converter(spec, crop=maker is None)  # flow: of the whole frame, cropped after
    try:
        for clip in _planned_clips(path, spec, ends, times, converter, maker):
            yield clip
            done += 1
        return
    except _TimesDiffer as e:
        reason = str(e)
    decoded = frame_times(path, decode=True)
    if np.array_equal(decoded, times):  # these were the decoder's own times: it really stopped early
        raise VideoError(f"{path}: {reason}")
    if _picked_times(spec, times, ends[:done]) != _picked_times(spec, decoded, ends[:done]):
        raise VideoError(f"{path}: frame times changed while decoding ({reason}); clips already given are wrong")
    rest = ends[done:]
    if len(decoded) < len(times):
        last = float(decoded.max())
        if skipped := [e for e in rest if e > last + EPS_S]:
            log.warning("%s: only %d of %d frames decode (%s); %d clip(s) after %.3f s skipped",
                        path, len(decoded), len(times), reason, len(skipped), last)  # fmt: skip
            rest = [e for e in rest if e <= last + EPS_S]
    yield from _planned_clips(path, spec, rest, decoded, converter, maker)


def _picks(spec: ModelSpec, times: np.ndarray, ends: list[float]) -> list[dict[str, np.ndarray]]:
    """Per clip, per input: indices (in decoding order) of the frames it takes (flow: ``[frames, pairs + 1]``, the
    frames of each instant's chain)."""
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    flow = spec.flow_input
    if flow is not None:
        return [{flow.name: order[chain_indices(flow, sorted_times, end)]} for end in ends]
    return [{k: order[v] for k, v in sample_indices(spec, sorted_times, end).items()} for end in ends]


def _picked_times(spec: ModelSpec, times: np.ndarray, ends: list[float]) -> list[tuple[float, ...]]:
    return [tuple(float(t) for v in p.values() for t in times[np.ravel(v)]) for p in _picks(spec, times, ends)]


def _planned_clips(
    path: Path,
    spec: ModelSpec,
    ends: list[float],
    times: np.ndarray,
    converter: Converter,
    maker: FlowMaker | None = None,
) -> Iterator[Window]:
    picks = _picks(spec, times, ends)
    needs = [{int(i) for v in p.values() for i in np.ravel(v)} for p in picks]
    last_use = {i: n for n, wanted in enumerate(needs) for i in wanted}  # the last clip (in order) using frame i
    converted: dict[int, np.ndarray] = {}
    region = FULL
    done = 0  # clips yielded
    with _open(path) as container:
        stream = container.streams.video[0]
        rate, time_base = _rates(stream)
        frames = enumerate(container.decode(stream))
        while done < len(picks):
            if needs[done] <= converted.keys():
                if maker is not None:  # flow: each instant's chain of (time, grey frame), then its flow
                    inputs = {
                        k: maker([[(float(times[i]), converted[int(i)]) for i in chain] for chain in v])
                        for k, v in picks[done].items()
                    }
                else:
                    inputs = {k: np.stack([converted[int(i)] for i in v]) for k, v in picks[done].items()}
                yield Window(end=ends[done], inputs=inputs, region=region)
                for i in needs[done]:
                    if last_use[i] == done:
                        del converted[i]
                done += 1
                continue
            try:
                index, frame = next(frames)
            except (StopIteration, av.FFmpegError):
                raise _TimesDiffer(f"ended before the frames of the clip ending at {ends[done]:.3f} s") from None
            if index >= len(times) or times[index] not in _candidates(frame, index, rate, time_base):
                raise _TimesDiffer(f"frame {index} is not at {times[min(index, len(times) - 1)]:.6f} s")
            if index in last_use:
                rgb = converter(frame)
                converted[index] = grey(rgb) if maker is not None else rgb
                region = converter.region_of(frame)


def _candidates(frame: av.VideoFrame, index: int, rate: float, time_base: float) -> tuple[float, ...]:
    """The times :func:`frame_times` may give this frame: its pts, its dts, or its place at the nominal rate."""
    return tuple(t * time_base for t in (frame.pts, frame.dts) if t is not None) + (index / rate,)


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
