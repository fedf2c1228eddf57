"""One camera's path: its clips → its model (through the model's batcher) → its event tracker → the sink.

How a clip is scored is a behaviour, chosen once when the agent wires the camera (:mod:`agent.live.app`):

- :class:`ClipScoring` (clip models): one score row per clip. A live camera's clip goes to the batcher as soon as
  it is ready, while the previous one may still be running; a newer clip replaces one that no batch has taken yet,
  so under load it joins the next batch instead of waiting for its predecessor's result. A consumer-paced file
  keeps two clips in the batcher, none dropped.
- :class:`PersonScoring` (person models): the detector finds people on the clip's key frame (its centre), the IoU
  tracker gives them ids, and the model scores each person's box; one clip at a time, so the detector runs only on
  clips that will be scored.
- :class:`FusedScoring` (a camera that feeds several clip models, ``fusion``): each model's clips go to its own
  batcher; once every model has scored a clip since the last fused row, their probabilities are fused
  (:class:`agent.fusion.Fusion`, a weighted average) into one row for the camera's one event tracker.

A flow model's clips get their flow first, in the camera's flow thread (:class:`agent.live.flowclips.FlowStage`);
a clip whose flow fails is lost (logged), the camera goes on.

:class:`CameraPipeline` is the same for both: it applies the scores in the order the clips came, hands the events
to the evidence keeper (which adds where their snapshot and clip are), publishes them (and to the webhooks) with
the ON/OFF state of each label, and watches the stream's status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from agent.errors import InferenceError
from agent.fusion import Fusion
from agent.geometry import FULL, to_frame
from agent.live.batcher import Batcher, Scored
from agent.live.clips import Clip
from agent.live.events import Event, EventTracker, PersonEvents, Tracker, tracked_labels
from agent.live.evidence.keeper import Evidence
from agent.live.flowclips import FlowStage
from agent.live.people import IouTracker, Person, PersonDetector
from agent.live.sinks import Sink
from agent.live.sources import Camera
from agent.live.webhooks import Webhooks
from agent.metrics import Metrics
from agent.urls import Redactor

log = logging.getLogger("actionstream")
STATUS_POLL_S = 0.25


@dataclass
class Work:
    """A clip in flight: the future of its scores (``None`` when a newer clip replaced it) and, for person models,
    who was scored and who was lost."""

    clip: Clip
    scored: asyncio.Future[Scored | None]
    people: list[Person] | None = None
    lost: list[int] | None = None


class Scoring(Protocol):
    """How a camera's clips are scored and the scores turned into events."""

    @property
    def tracker(self) -> Tracker: ...

    @property
    def in_flight(self) -> int | None:
        """Clips in flight at once; None: no bound (a newer clip replaces one that waits)."""
        ...

    async def submit(self, clip: Clip) -> Work | None:
        """Send the clip to the model; None when it is lost (the reason is logged)."""
        ...

    def apply(self, work: Work, scored: Scored) -> list[Event]: ...

    def stream_down(self, now: float, monotonic: float) -> list[Event]: ...

    def close(self) -> None: ...


async def with_flow(flow: FlowStage | None, clip: Clip, camera: str) -> Clip | None:
    """The clip with its flow computed (flow models), or None when that failed (logged: the clip is lost)."""
    if flow is None:
        return clip
    try:
        return await flow.ready(clip)
    except Exception as e:  # OpenCV's errors, say: this clip is lost, the camera goes on
        log.error("camera %s: optical flow failed (%s: %s); clip ending at %.3f s lost", camera, type(e).__name__, e,
                  clip.end)  # fmt: skip
        return None


class ClipScoring:
    """Clip models: one score row per clip (see the module docstring)."""

    def __init__(self, batcher: Batcher, tracker: EventTracker, *, live: bool, flow: FlowStage | None = None) -> None:
        self.batcher, self.tracker, self.live, self.flow = batcher, tracker, live, flow
        self.in_flight: int | None = None if live else 2

    async def submit(self, clip: Clip) -> Work | None:
        ready = await with_flow(self.flow, clip, self.tracker.camera)
        return None if ready is None else Work(ready, self.batcher.submit(ready, replace=self.live))

    def apply(self, work: Work, scored: Scored) -> list[Event]:
        clip = work.clip
        return self.tracker.update(
            scored.scores,
            clip_start=clip.start,
            clip_end=clip.end,
            received_at=clip.received_at,
            inference_ms=scored.inference_ms,
            monotonic=clip.received_mono,
        )

    def stream_down(self, now: float, monotonic: float) -> list[Event]:
        return self.tracker.stream_down(now, monotonic)

    def close(self) -> None:
        if self.flow is not None:
            self.flow.close()


class FusedScoring:
    """Several clip models on one camera, fused (see the module docstring). A round ends when every model has scored a
    clip since the last fused row; its clips must overlap in time (else the round starts again from the newest);
    the fused row's clip spans theirs and counts as received with the newest one's frame."""

    def __init__(
        self,
        batchers: dict[str, Batcher],
        fusion: Fusion,
        tracker: EventTracker,
        *,
        live: bool,
        flows: dict[str, FlowStage] | None = None,
    ) -> None:
        self.batchers, self.fusion, self.tracker, self.live = batchers, fusion, tracker, live
        self.flows = flows or {}
        self.in_flight: int | None = None if live else 2 * len(batchers)
        self.latest: dict[str, tuple[Clip, Scored]] = {}
        self.fresh: set[str] = set()  # models that scored a clip since the last fused row

    async def submit(self, clip: Clip) -> Work | None:
        model = clip.model
        assert model in self.batchers, f"a clip for {model!r}, not one of {list(self.batchers)}"
        ready = await with_flow(self.flows.get(model), clip, self.tracker.camera)
        return None if ready is None else Work(ready, self.batchers[model].submit(ready, replace=self.live))

    def apply(self, work: Work, scored: Scored) -> list[Event]:
        assert work.clip.model is not None
        self.latest[work.clip.model] = (work.clip, scored)
        self.fresh.add(work.clip.model)
        if self.fresh != set(self.batchers):
            return []
        clips = [self.latest[m][0] for m in self.batchers]
        newest = max(clips, key=lambda c: c.end)
        if min(c.end for c in clips) < newest.start:  # not the same moment: wait for the others' next clips
            self.fresh = {work.clip.model}
            return []
        self.fresh = set()
        fused = self.fusion({m: self.latest[m][1].scores for m in self.batchers})
        return self.tracker.update(
            fused,
            clip_start=min(c.start for c in clips),
            clip_end=newest.end,
            received_at=newest.received_at,
            inference_ms=max(self.latest[m][1].inference_ms for m in self.batchers),
            monotonic=newest.received_mono,
        )

    def stream_down(self, now: float, monotonic: float) -> list[Event]:
        self.latest, self.fresh = {}, set()
        return self.tracker.stream_down(now, monotonic)

    def close(self) -> None:
        for flow in self.flows.values():
            flow.close()


class PersonScoring:
    """Person models: who is on the key frame, then what each of them does (see the module docstring)."""

    in_flight: int | None = 1

    def __init__(
        self,
        batcher: Batcher,
        tracker: PersonEvents,
        detector: PersonDetector,
        people: IouTracker,
        metrics: Metrics,
    ) -> None:
        self.batcher, self.tracker, self.detector, self.people = batcher, tracker, detector, people
        spec = batcher.runtime.spec
        self.key_input = min(spec.inputs, key=lambda i: i.stride_s).name
        self._seconds = metrics.inference_seconds.labels(model=f"{batcher.runtime.name}/detector")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"detect-{tracker.camera}")

    async def submit(self, clip: Clip) -> Work | None:
        frames = clip.inputs[self.key_input]
        t0 = time.perf_counter()
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.detector.detect, frames[len(frames) // 2]
            )
        except Exception as e:  # a detector error loses this clip; the camera goes on
            log.error("camera %s: person detector failed: %s", self.tracker.camera, e)
            return None
        self._seconds.observe(time.perf_counter() - t0)
        people, lost = self.people.update(found, clip.received_at)
        if people:
            future = self.batcher.submit(clip, np.asarray([p.box for p in people], dtype=np.float32))
        else:
            future = asyncio.get_running_loop().create_future()
            future.set_result(Scored(np.zeros((0, len(self.tracker.labels)), np.float32), 0.0))
        return Work(clip, future, people, lost)

    def apply(self, work: Work, scored: Scored) -> list[Event]:
        clip = work.clip
        assert work.people is not None and work.lost is not None
        people = work.people
        if clip.region != FULL:  # boxes of the region the model saw → of the whole frame (events, zones)
            people = [Person(p.id, to_frame(p.box, clip.region), p.score) for p in people]
        return self.tracker.update(
            people,
            scored.scores,
            lost=work.lost,
            clip_start=clip.start,
            clip_end=clip.end,
            received_at=clip.received_at,
            inference_ms=scored.inference_ms,
            monotonic=clip.received_mono,
        )

    def stream_down(self, now: float, monotonic: float) -> list[Event]:
        self.people.reset()
        return self.tracker.stream_down(now, monotonic)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class CameraPipeline:
    """A camera wired to its scoring and the sink: :meth:`stream` and :meth:`watch` run as tasks until the agent
    stops (or the camera, a file, ends); :meth:`finish` ends it cleanly."""

    def __init__(
        self,
        camera: Camera,
        scoring: Scoring,
        sink: Sink,
        *,
        evidence: Evidence | None = None,
        webhooks: Webhooks | None = None,
    ) -> None:
        self.camera, self.scoring, self.sink = camera, scoring, sink
        self.evidence, self.webhooks = evidence, webhooks
        self.name = camera.config.name
        self.redact = Redactor(camera.config.stream_url())
        self.states: dict[str, bool] = {}  # last published ON/OFF per label

    @property
    def tracker(self) -> Tracker:
        return self.scoring.tracker

    def announce(self) -> None:
        """Discovery, then the true state of every label this camera may turn ON: OFF, since nothing is active yet
        (a retained ON left by a run that crashed would otherwise stay ON)."""
        labels = tracked_labels(self.tracker.config, self.tracker.labels)
        self.sink.announce(self.name, labels)
        for label in labels:
            self.states[label] = False
            self.sink.publish_state(self.name, label, False)

    async def stream(self) -> None:
        """Takes the camera's clips and sends them to be scored; applies the scores in order. A failure stops this
        camera only and says so (it is a bug: bad input is handled where it comes in)."""
        try:
            await self._stream()
        except Exception as e:
            log.error("camera %s: its pipeline stopped: %s", self.name, self.redact(f"{type(e).__name__}: {e}"))

    async def _stream(self) -> None:
        order: deque[Work | None] = deque()  # sent, scores not yet applied; None: the camera has ended
        added = asyncio.Event()
        bound = self.scoring.in_flight
        slots = asyncio.Semaphore(bound) if bound else None
        results = asyncio.create_task(self._results(order, added, slots))
        try:
            async for clip in self.camera.clips():
                if slots is not None:
                    await slots.acquire()
                work = await self.scoring.submit(clip)
                if work is None:
                    if slots is not None:
                        slots.release()
                    continue
                order.append(work)
                added.set()
            order.append(None)  # apply what is in flight, then stop
            added.set()
            await results
        finally:
            results.cancel()
            for work in order:  # stopping: nobody will look at these any more
                if work is not None:
                    work.scored.cancel()

    async def _results(self, order: deque[Work | None], added: asyncio.Event, slots: asyncio.Semaphore | None) -> None:
        while True:
            while not order:
                added.clear()
                await added.wait()
            work = order.popleft()
            if work is None:
                return
            try:
                scored = await work.scored
                if scored is not None:  # None: replaced by the camera's newer clip (counted by the batcher)
                    self._publish(self.scoring.apply(work, scored), work.clip)
            except InferenceError:
                pass  # logged by the batcher, once per failed run; this clip is lost, the camera goes on
            except Exception:
                log.exception("camera %s: the scores of the clip ending at %.3f s were lost", self.name, work.clip.end)
            finally:
                if slots is not None:
                    slots.release()

    async def watch(self) -> None:
        """Publishes the stream's status when it changes; a stream that goes down ends its actions."""
        up = None
        while True:
            if self.camera.up != up:
                up = self.camera.up
                try:
                    self.sink.publish_status(self.name, up)
                    if not up:
                        self._publish(self.scoring.stream_down(time.time(), time.monotonic()))
                except Exception:
                    log.exception("camera %s: publishing the stream's status failed", self.name)
            await asyncio.sleep(STATUS_POLL_S)

    def model_changed(self, up: bool) -> None:
        """The model went down (its runs keep failing): end the actions now rather than leave them on."""
        if not up:
            self._publish(self.scoring.stream_down(time.time(), time.monotonic()))

    def _publish(self, events: list[Event], clip: Clip | None = None) -> None:
        """Publishes a clip's events (``clip``: the one that caused them, if any), with their evidence."""
        if self.evidence is not None and events:
            events = self.evidence.on_events(events, clip)
        for event in events:
            self.sink.publish_event(event)
            if self.webhooks is not None:
                self.webhooks.publish(event)
        for label, on in self.tracker.active().items():  # person models: ON while anyone does it
            if self.states.get(label, False) != on:
                self.states[label] = on
                self.sink.publish_state(self.name, label, on)

    def finish(self) -> None:
        """Clean shutdown: end every active action and mark the camera offline."""
        self._publish(self.tracker.close(time.time(), time.monotonic()))
        self.sink.publish_status(self.name, False)
        self.scoring.close()
