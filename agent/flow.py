"""Optical flow for flow models, made as MMAction2 makes it (``tools/misc/flow_extraction.py``), torch-free.

One flow image from two frames ``step_s`` apart (one frame of the training data):

1. both frames as the model's frames are made (resized to the spec's geometry, not cropped), then grey as OpenCV
   makes it (``cvtColor``; MMAction2 reads BGR and converts with ``BGR2GRAY``: the same weights on the same colours);
2. dense flow from the first to the second: TV-L1 (``cv2.optflow.DualTVL1OpticalFlow``, OpenCV's defaults) or
   Farnebäck (``calcOpticalFlowFarneback(0.5, 3, 15, 3, 5, 1.2, 0)``), MMAction2's two, or DIS
   (``cv2.DISOpticalFlow``, preset medium), a fast method MMAction2 does not have;
3. quantised as ``flow_to_img``: clipped to ±bound, shifted by bound, scaled by 255 / (2·bound) and truncated to
   uint8, in float32, channel x then y; 128 is no motion;
4. the centre crop of the spec, as for RGB frames.

A camera whose frames are not ``step_s`` apart (25 fps for a model trained at 30) gives flow scaled by
``step_s / Δt`` before step 3, so that displacements match the training data's; pairs exactly ``step_s`` apart
(within 1 %) are not scaled. Which frames make a pair: :func:`next_frame` (the frame after the first one nearest to
``step_s`` later), the same live (:mod:`agent.live.flowclips`), offline and in the trainer.

OpenCV comes from ``opencv-contrib-python-headless`` (TV-L1 lives in its contrib module ``cv2.optflow``), the
``flow`` extra; only flow models need it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np

from agent.errors import SpecError
from agent.spec import FLOW_METHODS, FlowSpec, InputSpec, ModelSpec

FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)  # MMAction2's flow_extraction.py: pyr_scale, levels, winsize, ... flags
SCALE_TOLERANCE = 0.01  # pairs within 1 % of step_s are used as they are
EPS_S = 1e-6


def cv2_module() -> ModuleType:
    """OpenCV with its contrib modules, or a clear error saying how to install it."""
    try:
        import cv2
    except ImportError as e:
        raise SpecError(
            f"flow models need OpenCV with its contrib modules ({e}): "
            "pip install opencv-contrib-python-headless (or the `flow` extra: pip install 'actionstream[flow]')"
        ) from None
    if not hasattr(cv2, "optflow"):
        raise SpecError(
            "flow models need OpenCV's contrib modules (cv2.optflow, for TV-L1): "
            "pip install opencv-contrib-python-headless instead of opencv-python(-headless)"
        )
    return cv2


def grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` → uint8 grey ``[H, W]`` (OpenCV's weights, as MMAction2's BGR2GRAY on BGR)."""
    cv2 = cv2_module()
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def quantise(flow: np.ndarray, bound: float) -> np.ndarray:
    """float32 flow ``[..., 2]`` (pixels) → uint8, exactly as MMAction2's ``flow_to_img`` (same operations, same
    order, in float32): ``uint8((clip(f, -bound, bound) + bound) * (255 / (2·bound)))``."""
    out = np.clip(flow.astype(np.float32, copy=False), -bound, bound)
    out += bound
    out *= 255 / float(2 * bound)
    return out.astype(np.uint8)


class FlowEstimator:
    """Dense flow between two grey frames, quantised. One per thread: OpenCV's estimators keep buffers."""

    def __init__(self, method: str, bound: float = 20.0) -> None:
        if method not in FLOW_METHODS:
            raise SpecError(f"unknown flow method {method!r}; expected one of: {', '.join(FLOW_METHODS)}")
        self.method, self.bound = method, bound
        cv2 = cv2_module()
        self._calc: Callable[[np.ndarray, np.ndarray], np.ndarray]
        if method == "tvl1":
            tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
            self._calc = lambda a, b: tvl1.calc(a, b, None)
        elif method == "farneback":
            self._calc = lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, *FARNEBACK)
        else:
            dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            self._calc = lambda a, b: dis.calc(a, b, None)

    def raw(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """float32 ``[H, W, 2]``: where each pixel of the grey ``first`` moved to in ``second`` (x, y), pixels."""
        return self._calc(np.ascontiguousarray(first), np.ascontiguousarray(second))

    def __call__(self, first: np.ndarray, second: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """uint8 ``[H, W, 2]``: the flow from ``first`` to ``second``, times ``scale`` when it is not 1 (within
        :data:`SCALE_TOLERANCE`), quantised."""
        flow = self.raw(first, second)
        if abs(scale - 1.0) > SCALE_TOLERANCE:
            flow = flow * np.float32(scale)
        return quantise(flow, self.bound)


def pair_scale(flow: FlowSpec, first_t: float, second_t: float) -> float:
    """Factor that turns a displacement over ``second_t - first_t`` into one over ``flow.step_s``."""
    dt = second_t - first_t
    return flow.step_s / dt if dt > EPS_S else 1.0


def next_frame(pts: np.ndarray, index: int, step_s: float) -> int:
    """The frame that pairs with frame ``index`` (``pts`` sorted, seconds): among the frames after it, the first
    at or past ``pts[index] + step_s`` minus half the gap before it — the frame nearest to ``step_s`` later when the
    rate is steady (a 30 fps camera for a 30 fps model: the next frame; 60 fps: the one after). The last frame pairs
    with itself (no motion)."""
    target = pts[index] + step_s
    for i in range(index + 1, len(pts)):
        if pts[i] + EPS_S >= target - (pts[i] - pts[i - 1]) / 2:
            return i
    return len(pts) - 1


def base_times(inp: InputSpec, end: float) -> np.ndarray:
    """The instants a flow input's chains start at, for a clip whose newest frame is at ``end``: ``frames`` instants
    ``stride_s`` apart, the last ``pairs · step_s`` before ``end``."""
    assert inp.flow is not None
    last = end - inp.flow.pairs * inp.flow.step_s
    return last - np.arange(inp.frames - 1, -1, -1, dtype=np.float64) * inp.stride_s


def chain_indices(
    inp: InputSpec, pts: np.ndarray, end: float | None = None, *, bases: np.ndarray | None = None
) -> np.ndarray:
    """int ``[frames, pairs + 1]``: per sampled instant (``bases``, default :func:`base_times` for ``end``, itself
    the newest frame by default), the frames whose consecutive pairs give its flow fields — the newest frame at or
    before the instant (the first frame if none is), then :func:`next_frame` after each."""
    assert inp.flow is not None
    if len(pts) == 0:
        raise ValueError("no frames to sample from")
    if bases is None:
        bases = base_times(inp, float(pts[-1]) if end is None else end)
    starts = np.searchsorted(pts, bases + EPS_S, side="right") - 1
    chains = np.empty((inp.frames, inp.flow.pairs + 1), dtype=np.int64)
    for k, first in enumerate(np.clip(starts, 0, len(pts) - 1)):
        chains[k, 0] = first
        for j in range(inp.flow.pairs):
            chains[k, j + 1] = next_frame(pts, int(chains[k, j]), inp.flow.step_s)
    return chains


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` x ``size`` of ``[H, W, ...]``, origin ``((W - size) // 2, (H - size) // 2)``."""
    h, w = image.shape[:2]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return image[y0 : y0 + size, x0 : x0 + size]


class FlowMaker:
    """A flow input's images from its chains of grey frames, computing each pair once while it is reused.

    ``__call__(chains)`` takes, per sampled instant, the ``pairs + 1`` frames as (time, grey) and returns uint8
    ``[frames · pairs, size, size, 2]`` (instants oldest first, each instant's fields in time order). Fields of
    pairs that the previous call also had are reused (consecutive live clips overlap); ``on_field(seconds)`` is
    called for each one computed."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        method: str | None = None,
        on_field: Callable[[float], None] | None = None,
    ) -> None:
        inp = spec.flow_input
        if inp is None or inp.flow is None:
            raise SpecError(f"{spec.arch}: not a flow model")
        self.flow, self.size = inp.flow, spec.size
        self.method = method or inp.flow.method
        self.estimator = FlowEstimator(self.method, inp.flow.bound)
        self.on_field = on_field
        self._kept: dict[tuple[float, float], np.ndarray] = {}
        self.computed = self.reused = 0

    def __call__(self, chains: Sequence[Sequence[tuple[float, np.ndarray]]]) -> np.ndarray:
        kept: dict[tuple[float, float], np.ndarray] = {}
        fields = []
        for chain in chains:
            for (t0, a), (t1, b) in zip(chain[:-1], chain[1:], strict=True):
                key = (t0, t1)
                field = kept.get(key)
                if field is None:
                    field = self._kept.get(key)
                    if field is None:
                        field = self._compute(a, b, pair_scale(self.flow, t0, t1))
                    else:
                        self.reused += 1
                    kept[key] = field
                fields.append(field)
        self._kept = kept
        return np.stack(fields)

    def _compute(self, a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
        t0 = time.perf_counter()
        field = centre_crop(self.estimator(a, b, scale), self.size).copy()
        self.computed += 1
        if self.on_field is not None:
            self.on_field(time.perf_counter() - t0)
        return field
