"""A flow model's clips, live: which frames make its pairs, kept grey; their flow computed off the event loop.

A flow input samples ``frames`` instants ``stride_s`` apart, like an RGB input (a grid anchored at the camera's first
frame, each instant taking the newest frame at or before it); from each instant's frame a *chain* of ``pairs``
further frames follows, each the frame after the previous one nearest to ``flow.step_s`` later
(:func:`agent.flow.next_frame`). A clip ends at the newest frame of its last chain. Only chain frames are converted
(resized as the model's frames, not cropped, then grey); the decoded frame is not kept.

:class:`FlowBuffer` does the sampling in the camera's thread, as :class:`agent.live.clips.ClipBuffer` does for RGB
inputs, and hands out :class:`FlowClip`: a clip whose input is not computed yet. :class:`FlowStage` computes it in
the camera's own flow thread (never on the event loop, never in the decoding thread, which must keep reading the
stream), each pair once while consecutive clips share it, and observes the seconds per flow field
(``actionstream_flow_seconds``). A clip that a newer one replaced before it was taken is never computed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.flow import EPS_S, FlowMaker, grey
from agent.live.clips import Clip
from agent.metrics import Metrics
from agent.spec import ModelSpec

Chain = tuple[tuple[float, np.ndarray], ...]  # (stream time, grey frame) per frame of a chain


@dataclass(frozen=True)
class FlowClip(Clip):
    """A flow model's clip before its flow is computed: per sampled instant, its chain of grey frames."""

    chains: tuple[Chain, ...] = ()
    input_name: str = "clip"

    def complete(self, maker: FlowMaker) -> Clip:
        """The clip with its flow input, uint8 ``[frames · pairs, size, size, 2]`` (blocking: a flow thread's)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(Clip)}
        return Clip(**fields | {"inputs": {self.input_name: maker(self.chains)}})


@dataclass
class _Frame:
    frame: Any  # decoded; dropped once the frame is older than the newest (only its grey is needed then)
    t: float
    received_at: float
    received_mono: float | None
    grey: np.ndarray | None = None


@dataclass
class _Chain:
    frames: list[_Frame]


class FlowBuffer:
    """One camera's sampling for a flow model (see the module docstring); the interface of ``ClipBuffer``.

    Clips end at the newest frame of the newest complete chain, every ``every_s`` (rounded to the grid), once
    ``frames`` chains are complete. Timestamps going backwards or forwards by more than a span, and a change of the
    frames' size, restart it; smaller backward steps drop the frame (``dropped``)."""

    def __init__(
        self,
        spec: ModelSpec,
        convert: Callable[[Any], np.ndarray],
        *,
        camera: str = "camera",
        every_s: float = 1.0,
    ) -> None:
        inp = spec.flow_input
        if inp is None or inp.flow is None:
            raise ValueError(f"{spec.arch} is not a flow model")
        self.camera, self.convert = camera, convert  # convert: decoded frame → RGB, resized, not cropped
        self.input_name, self.frames, self.stride = inp.name, inp.frames, inp.stride_s
        self.pairs, self.step = inp.flow.pairs, inp.flow.step_s
        self.span = spec.span_s
        self.every = max(1, round(every_s / self.stride))
        self.converted = self.dropped = self.restarts = 0
        self.seq = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything buffered (after a reconnect, a timestamp break or a new frame size)."""
        self.anchor: float | None = None
        self.prev: _Frame | None = None
        self.decided = -1  # newest slot whose first frame is known
        self.chains: dict[int, _Chain] = {}
        self.complete = -1  # newest slot whose chain, and every earlier one's, is complete
        self.first_slot = 0
        self.next_emit = 0
        self.shape: tuple[int, ...] | None = None

    def next_clip_t(self) -> float | None:
        """Stream time of the frame the next clip waits for (its last chain's end, roughly), or None before the first
        frame."""
        if self.anchor is None:
            return None
        slot = max(self.next_emit, self.first_slot + self.frames - 1)
        return self.anchor + slot * self.stride + self.pairs * self.step

    def push(self, frame: Any, t: float, received_at: float, received_mono: float | None = None) -> Clip | None:
        """Add a decoded frame with presentation time ``t`` (s); returns a :class:`FlowClip` when one is due."""
        prev = self.prev
        if prev is not None:
            if t <= prev.t - self.span or t - prev.t > self.span:
                self.restarts += 1
                self.reset()
                prev = None
            elif t <= prev.t + EPS_S:
                self.dropped += 1
                return None
        current = _Frame(frame, t, received_at, received_mono)
        if self.anchor is None:
            self.anchor = t
        j = math.floor((t - self.anchor) / self.stride + EPS_S)
        on_grid = abs(self.anchor + j * self.stride - t) <= EPS_S
        if prev is not None:
            gap = t - prev.t
            for slot in range(self.complete + 1, self.decided + 1):  # chains in progress: is this their next frame?
                chain = self.chains.get(slot)
                if chain is not None and len(chain.frames) <= self.pairs and self._pairs_with(chain, current, gap):
                    if not self._add(chain, current):
                        return self._restart(current)
            upto = j - 1 if on_grid else j  # instants in [prev.t, t): prev is the newest frame at or before them
            first = max(self.decided + 1, upto - self.frames + 1)
            self._skip_to(first)
            for slot in range(first, upto + 1):
                chain = self.chains[slot] = _Chain([])
                if not self._add(chain, prev) or (
                    self._pairs_with(chain, current, gap) and not self._add(chain, current)
                ):
                    return self._restart(current)
            self.decided = max(self.decided, upto)
        if on_grid and j > self.decided:
            self._skip_to(max(self.decided + 1, j - self.frames + 1))
            chain = self.chains[j] = _Chain([])
            if not self._add(chain, current):
                return self._restart(current)
            self.decided = j
        if prev is not None:
            prev.frame = None  # older than the newest frame now: only its grey (if a chain has it) is kept
        self.prev = current
        return self._maybe_emit(current)

    def _skip_to(self, first: int) -> None:
        """Slots before ``first`` will get no chain (the stream skipped them); no clip that is still to come uses
        them: they count as done."""
        if first > self.decided + 1:
            self.complete = max(self.complete, first - 1)
            for slot in [s for s in self.chains if s < first]:
                del self.chains[slot]

    def _pairs_with(self, chain: _Chain, frame: _Frame, gap: float) -> bool:
        """Whether ``frame`` is the chain's next frame (:func:`agent.flow.next_frame`'s rule, one frame at a time)."""
        last = chain.frames[-1]
        return frame.t > last.t + EPS_S and frame.t + EPS_S >= last.t + self.step - gap / 2

    def _add(self, chain: _Chain, item: _Frame) -> bool:
        """Appends ``item`` (converted on first use); False when its size differs from the frames' so far."""
        if item.grey is None:
            item.grey = grey(self.convert(item.frame))
            self.converted += 1
        if self.shape is None:
            self.shape = item.grey.shape
        if item.grey.shape != self.shape:
            return False
        chain.frames.append(item)
        return True

    def _restart(self, current: _Frame) -> Clip | None:
        """The camera changed resolution (after a reconnect): no clip mixes sizes; start again from ``current``."""
        self.reset()
        return self.push(current.frame, current.t, current.received_at, current.received_mono)

    def _maybe_emit(self, current: _Frame) -> Clip | None:
        while (chain := self.chains.get(self.complete + 1)) is not None and len(chain.frames) == self.pairs + 1:
            self.complete += 1
        for slot in [s for s in self.chains if s <= self.complete - self.frames]:
            del self.chains[slot]
        end = self.complete
        if end - self.first_slot + 1 < self.frames or end < self.next_emit:
            return None
        self.next_emit = end + self.every
        chains = [self.chains[s] for s in range(end - self.frames + 1, end + 1)]
        newest = chains[-1].frames[-1]
        self.seq += 1
        assert all(f.grey is not None for c in chains for f in c.frames)
        return FlowClip(
            camera=self.camera,
            seq=self.seq,
            inputs={},
            start=chains[0].frames[0].t,
            end=newest.t,
            received_at=newest.received_at,
            received_mono=newest.received_mono,
            frame=current.frame if newest is current else None,
            chains=tuple(tuple((f.t, f.grey) for f in c.frames) for c in chains),  # type: ignore[misc]
            input_name=self.input_name,
        )


FLOW_THREADS = 1  # per camera: its flow fields one after the other (OpenCV parallelises inside some methods)


class FlowStage:
    """A camera's flow thread: completes its :class:`FlowClip` off the event loop; other clips pass through."""

    def __init__(self, spec: ModelSpec, camera: str, metrics: Metrics, *, method: str | None = None) -> None:
        inp = spec.flow_input
        assert inp is not None and inp.flow is not None
        self.method = method or inp.flow.method
        seconds = metrics.flow_seconds.labels(camera=camera, method=self.method)
        self.maker = FlowMaker(spec, method=self.method, on_field=seconds.observe)
        self._executor = ThreadPoolExecutor(max_workers=FLOW_THREADS, thread_name_prefix=f"flow-{camera}")

    async def ready(self, clip: Clip) -> Clip:
        """``clip`` with its flow input computed (a plain clip as it is)."""
        if not isinstance(clip, FlowClip):
            return clip
        return await asyncio.get_running_loop().run_in_executor(self._executor, clip.complete, self.maker)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
