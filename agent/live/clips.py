"""Which frames make a clip: sampling by presentation time, per the model spec.

A clip ends at its newest frame. The input with the finest stride (``clip``, or ``fast`` for SlowFast) samples
``frames`` instants ``stride_s`` apart ending there; coarser inputs take every ``alpha``-th of those instants, so
``slow[:, i] == fast[:, i * alpha]`` exactly as MMAction2's SlowFast subsamples its input. Each instant takes the
nearest frame at or before it (the first frame if the instant is earlier than the buffer).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.geometry import FULL, Box
from agent.spec import ModelSpec

# Timestamps are floats: an instant a rounding error before a frame still selects that frame.
EPS_S = 1e-6


def sample_times(spec: ModelSpec, end: float) -> dict[str, np.ndarray]:
    """Target instants per input for a clip ending at ``end`` (oldest first)."""
    finest = min(spec.inputs, key=lambda i: i.stride_s)
    base = end - np.arange(finest.frames - 1, -1, -1, dtype=np.float64) * finest.stride_s
    out: dict[str, np.ndarray] = {}
    for inp in spec.inputs:
        step = max(1, round(inp.stride_s / finest.stride_s))
        out[inp.name] = base[::step][: inp.frames]
    return out


def nearest_at_or_before(pts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index into sorted ``pts`` of the newest frame at or before each target (0 when none is)."""
    idx = np.searchsorted(pts, targets + EPS_S, side="right") - 1
    return np.clip(idx, 0, len(pts) - 1)


def sample_indices(spec: ModelSpec, pts: np.ndarray, end: float | None = None) -> dict[str, np.ndarray]:
    """Frame indices per input for the clip ending at ``end`` (default: the newest frame)."""
    if len(pts) == 0:
        raise ValueError("no frames to sample from")
    end = float(pts[-1]) if end is None else end
    return {name: nearest_at_or_before(pts, t) for name, t in sample_times(spec, end).items()}


@dataclass(frozen=True)
class Clip:
    """A model-ready clip: uint8 ``[T, size, size, 3]`` (``[T, H, W, 3]`` with crop none) per input, oldest first."""

    camera: str
    seq: int
    inputs: dict[str, np.ndarray]
    start: float  # stream time (s) of the oldest frame used
    end: float  # stream time (s) of the newest frame used
    received_at: float  # wall-clock time (UNIX s) at which the newest frame was received
    received_mono: float | None = None  # the same instant on the monotonic clock (None: not known)
    frame: Any = None  # the newest frame as decoded, at the stream's full resolution (evidence snapshots)
    model: str | None = None  # the model it is for, when its camera feeds several (fusion)
    region: Box = FULL  # the part of the upright frame the inputs show (cameras[].region, rounded to pixels)


@dataclass
class _Pending:
    """The newest frame, converted only once we know some grid instant needs it."""

    frame: Any
    t: float
    received_at: float
    received_mono: float | None
    rgb: np.ndarray | None = None


class ClipBuffer:
    """One camera's ring of converted frames, sampled live by presentation time.

    Instants ``anchor + j * stride`` (``stride`` = finest input's stride, ``anchor`` = first frame's time) form a
    grid; slot ``j`` holds the newest frame at or before instant ``j``. A frame is converted only when it is that
    frame for some instant: a frame exactly on an instant at once; otherwise when the next frame shows that no later
    frame precedes the instant. Clips end at the newest filled slot, every ``every_s`` (rounded to the grid), once a
    full span is buffered. Memory: ``frames`` (finest input) × size² × 3 bytes, allocated once (by ``ring``, given
    the shape: host memory by default; ``convert: graph`` on CUDA keeps it on the GPU, its frames and clips too).

    A timestamp going backwards by more than a span, or forwards by more than a span, restarts the buffer: no clip
    mixes frames from both sides of such a break. Smaller backward steps drop the frame (``out_of_order``).
    """

    def __init__(
        self,
        spec: ModelSpec,
        convert: Callable[[Any], np.ndarray],
        *,
        camera: str = "camera",
        every_s: float = 1.0,
        ring: Callable[[tuple[int, ...]], Any] | None = None,
    ) -> None:
        finest = min(spec.inputs, key=lambda i: i.stride_s)
        self.camera, self.convert = camera, convert
        self.new_ring = ring or (lambda shape: np.zeros(shape, dtype=np.uint8))  # device memory: agent.live.device
        self.stride, self.frames = finest.stride_s, finest.frames
        self.span = spec.span_s
        self.every = max(1, round(every_s / self.stride))
        self.steps: dict[str, int] = {i.name: max(1, round(i.stride_s / self.stride)) for i in spec.inputs}
        self.counts = {i.name: i.frames for i in spec.inputs}
        self.ring: Any = None  # allocated for the first frame's shape (crop none: the camera's)
        self.slot_t = np.zeros(self.frames)
        self.slot_received = np.zeros(self.frames)
        self.slot_mono = np.full(self.frames, np.nan)
        self.converted = self.dropped = self.restarts = 0
        self.seq = 0
        self._newest: tuple[int, Any] = (-1, None)  # (slot, decoded frame) of the last slot filled
        self.reset()

    def reset(self) -> None:
        """Forget everything buffered (after a reconnect or a timestamp break)."""
        self.anchor: float | None = None
        self.first_slot = 0
        self.filled = -1  # newest slot index whose frame is final
        self.next_emit = 0
        self.pending: _Pending | None = None

    def next_clip_t(self) -> float | None:
        """Stream time of the instant the next clip ends at (the frame at or after it completes the clip), or None
        before the first frame."""
        if self.anchor is None:
            return None
        return self.anchor + max(self.next_emit, self.first_slot + self.frames - 1) * self.stride

    def push(self, frame: Any, t: float, received_at: float, received_mono: float | None = None) -> Clip | None:
        """Add a decoded frame with presentation time ``t`` (s), received at ``received_at`` (UNIX s) and
        ``received_mono`` (the monotonic clock); returns a clip when one is due."""
        last = self.pending
        if last is not None:
            if t <= last.t - self.span or t - last.t > self.span:
                self.restarts += 1
                self.reset()
                last = None
            elif t <= last.t + EPS_S:
                self.dropped += 1
                return None
        if self.anchor is None:
            self.anchor = t
        j = math.floor((t - self.anchor) / self.stride + EPS_S)
        on_grid = abs(self.anchor + j * self.stride - t) <= EPS_S
        # Instants in [last.t, t) are final now: the previous frame is the newest at or before them.
        upto = j - 1 if on_grid else j
        if last is not None and upto > self.filled:
            self._fill(last, self.filled + 1, upto)
        current = _Pending(frame, t, received_at, received_mono)
        if on_grid:
            self._fill(current, max(j, self.filled + 1), j)
        self.filled = max(self.filled, upto, j if on_grid else -1)
        self.pending = current
        return self._maybe_emit()

    def _fill(self, item: _Pending, first: int, last: int) -> None:
        if item.rgb is None:
            item.rgb = self.convert(item.frame)
            self.converted += 1
        if self.ring is None or self.ring.shape[1:] != item.rgb.shape:
            if self.ring is not None:  # the camera changed resolution (after a reconnect): no clip mixes sizes
                self.first_slot = first
            self.ring = self.new_ring((self.frames, *item.rgb.shape))
        self._newest = (last, item.frame)
        for j in range(max(first, last - self.frames + 1), last + 1):
            k = j % self.frames
            self.ring[k] = item.rgb
            self.slot_t[k], self.slot_received[k] = item.t, item.received_at
            self.slot_mono[k] = np.nan if item.received_mono is None else item.received_mono

    def _maybe_emit(self) -> Clip | None:
        end = self.filled
        if end - self.first_slot + 1 < self.frames or end < self.next_emit:
            return None
        self.next_emit = end + self.every
        slots = np.arange(end - self.frames + 1, end + 1) % self.frames
        assert self.ring is not None  # a slot was filled
        inputs = {name: self.ring[slots[:: self.steps[name]][: self.counts[name]]] for name in self.steps}
        self.seq += 1
        return Clip(
            camera=self.camera,
            seq=self.seq,
            inputs=inputs,
            start=float(self.slot_t[slots[0]]),
            end=float(self.slot_t[slots[-1]]),
            received_at=float(self.slot_received[slots[-1]]),
            received_mono=None if np.isnan(mono := self.slot_mono[slots[-1]]) else float(mono),
            frame=self._newest[1] if self._newest[0] == end else None,
        )
