"""Which frames make a clip: sampling by presentation time, per the model spec.

A clip ends at its newest frame. The input with the finest stride (``clip``, or ``fast`` for SlowFast) samples
``frames`` instants ``stride_s`` apart ending there; coarser inputs take every ``alpha``-th of those instants, so
``slow[:, i] == fast[:, i * alpha]`` exactly as MMAction2's SlowFast subsamples its input. Each instant takes the
nearest frame at or before it (the first frame if the instant is earlier than the buffer).
"""

from __future__ import annotations

import numpy as np

from agent.spec import ModelSpec

# Timestamps are floats: an instant a rounding error before a frame still selects that frame.
EPS_S = 1e-6


def sample_times(spec: ModelSpec, end: float) -> dict[str, np.ndarray]:
    """Target instants per input for a clip ending at ``end`` (oldest first)."""
    finest = min(spec.inputs, key=lambda i: i.stride_s)
    base = end - np.arange(finest.frames - 1, -1, -1, dtype=np.float64) * finest.stride_s
    out = {}
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
