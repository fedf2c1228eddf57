"""Turns each camera's events into evidence, and tells the events where their evidence is.

:class:`Evidence` is the agent's one keeper (``evidence.enabled``). The camera pipelines hand it their events with
the clip that caused them (:meth:`Evidence.on_events`, on the event loop; it returns at once and the work goes to
threads):

- ``start``: a row in the store; a snapshot (the clip's newest frame at the stream's full resolution; from
  ``record_url``'s stream when the camera has one, decoded from its ring); a clip from ``pre_s`` before the start.
- ``update`` whose ``top_score`` rose above the snapshot's: a new snapshot (the same path), the row's top score.
- ``end``: the row's end time; the clip records until ``post_s`` after it.

Every event of an action then carries ``evidence``: the URL paths of its snapshot and clip on the agent's HTTP
server (``None`` for what it will not have). Each snapshot written is also published, retained, on
``{prefix}/{camera}/{label}/snapshot``.

Threads: one encodes snapshots (and decodes evidence streams' frames), one starts, ends and sweeps clips, the store
has its writer; the source threads write the clips' packets. The event loop never waits on any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from agent.config import AgentConfig, CameraConfig
from agent.live.clips import Clip
from agent.live.events import Event
from agent.live.evidence.recorder import EvidenceStream, Finished, Recorder
from agent.live.evidence.snapshots import encode_jpeg
from agent.live.evidence.store import Action, Store, evidence_path, write_file
from agent.live.sinks import Sink
from agent.live.sources import Camera
from agent.metrics import Metrics

log = logging.getLogger("actionstream.evidence")
SWEEP_S = 1.0  # how often clips whose stream went quiet are looked at
RETAIN_S = 60.0  # how often keep_days and max_gb are applied (also after any write that passes max_gb)
SNAPSHOT_QUEUE_MAX = 64  # snapshots waiting to be encoded; beyond it a new one is dropped (reason "busy")
DECIDE_SLACK_S = 2.0  # pre-roll kept beyond pre_s and the event tracker's min_hits, for latency and keyframes
STOP_S = 5.0


def action_url(action_id: str, kind: str) -> str:
    """The URL path of an action's snapshot or clip on the agent's HTTP server."""
    return f"/api/actions/{action_id}/{'snapshot.jpg' if kind == 'snapshot' else 'clip.mp4'}"


@dataclass
class _Action:
    """What the keeper remembers of an action until it ends."""

    camera: str
    label: str
    snapshot: bool  # a snapshot is made (or being made)
    clip: bool  # a clip is recording
    snapshot_score: float = -1.0
    generation: int = 0  # the newest snapshot job; older ones give way
    lock: threading.Lock = field(default_factory=threading.Lock)


class Evidence:
    """See the module docstring. ``async with evidence:`` opens the store and starts the evidence streams."""

    def __init__(self, config: AgentConfig, metrics: Metrics) -> None:
        self.config, self.metrics = config, metrics
        self.settings = config.evidence
        self.store = Store(config.storage, metrics)
        self.recorders: dict[str, Recorder] = {}
        self.streams: dict[str, EvidenceStream] = {}  # cameras with a record_url
        self._by_stream: dict[tuple[str, object], tuple[Recorder, EvidenceStream | None]] = {}
        self.sink: Sink | None = None
        self._actions: dict[str, _Action] = {}
        self.pending: dict[str, Future[bytes | None]] = {}  # action_id → its newest snapshot job
        self._snapshots = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence-snapshot")
        self._clips = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence-clips")
        self._queued = 0
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- wiring ----------------------------------------------------------------------------------------------------

    def attach(self, camera_config: CameraConfig, camera: Camera | Any) -> None:
        """Records this camera: its ``record_url`` stream, else the packets its own source reads. Camera entries
        that share a stream share its recorder (one ring, the longest history any of them needs) and its evidence
        stream."""
        if not self.settings.clips and not (self.settings.snapshots and camera_config.record_url is not None):
            return
        events = self.config.events_of(camera_config)
        history = self.settings.pre_s + (events.min_hits - 1) * camera_config.every_s + DECIDE_SLACK_S
        record = camera_config.record_config()
        source = getattr(camera, "source", None)
        if record is None and source is None:  # a camera without a stream of its own (tests, benchmarks): no clips
            return
        key = ("record", record.stream_url()) if record is not None else ("source", id(source))
        shared = self._by_stream.get(key)
        if shared is not None:
            recorder, evidence_stream = shared
            recorder.history_s = max(recorder.history_s, history)
        else:
            recorder = Recorder(
                camera_config.name,
                history_s=history,
                ring_bytes=int(self.settings.ring_mb * 1e6),
                max_clip_s=self.settings.max_clip_s,
                done=self._clip_done,
            )
            evidence_stream = None
            if record is not None:
                evidence_stream = EvidenceStream(record, recorder)
            elif source is not None:
                source.taps.append(recorder)
            self._by_stream[key] = (recorder, evidence_stream)
        if evidence_stream is not None:
            self.streams[camera_config.name] = evidence_stream
        self.recorders[camera_config.name] = recorder

    async def __aenter__(self) -> Evidence:
        self._loop = asyncio.get_running_loop()
        found = await asyncio.to_thread(self.store.open)
        log.info(
            "evidence: store %s (%d partial file(s) removed, %d open action(s) closed); clips %s, snapshots %s",
            self.store.db,
            found.partial_files,
            found.closed,
            "on" if self.settings.clips else "off",
            "on" if self.settings.snapshots else "off",
        )
        for stream in self._evidence_streams():
            stream.start()
        self._tasks = [asyncio.create_task(self._sweep(), name="evidence-sweep")]
        await asyncio.wrap_future(self.store.retain(self._busy()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for stream in self._evidence_streams():
            stream.stop()
        loop = asyncio.get_running_loop()
        for recorder in self._recorders():
            await loop.run_in_executor(self._clips, recorder.stop)
        self._snapshots.shutdown(wait=False, cancel_futures=False)
        await asyncio.to_thread(self._snapshots.shutdown, wait=True)
        self._clips.shutdown(wait=True)
        deadline = loop.time() + STOP_S
        for stream in self._evidence_streams():
            while stream.source.alive and loop.time() < deadline:
                await asyncio.sleep(0.05)
        await asyncio.to_thread(self.store.close)

    def _recorders(self) -> list[Recorder]:
        """Every recorder once (entries that share a stream share one)."""
        return [recorder for recorder, _ in list(self._by_stream.values())]

    def _evidence_streams(self) -> list[EvidenceStream]:
        return [stream for _, stream in list(self._by_stream.values()) if stream is not None]

    # -- events (the event loop) -----------------------------------------------------------------------------------

    def on_events(self, events: list[Event], clip: Clip | None) -> list[Event]:
        """Evidence for these events of one camera (caused by ``clip``, if any); the events with their ``evidence``
        paths, in the same order."""
        out = []
        for event in events:
            try:
                out.append(self._on_event(event, clip))
            except Exception:
                log.exception("camera %s: evidence for %s failed", event.camera, event.action_id)
                out.append(event)
        return out

    def _on_event(self, event: Event, clip: Clip | None) -> Event:
        action = self._actions.get(event.action_id)
        if event.type == "start" or action is None:
            action = self._start(event, clip)
        elif event.type == "update":
            self.store.update(event.action_id, top_score=event.top_score)
            if action.snapshot and event.top_score > action.snapshot_score:
                self._snapshot(event, action, clip)
        if event.type == "end":
            self.store.update(event.action_id, end_time=event.end_time, top_score=event.top_score)
            recorder = self.recorders.get(event.camera)
            if action.clip and recorder is not None and event.end_time is not None:
                self._clips.submit(recorder.end, event.action_id, event.end_time + self.settings.post_s)
            del self._actions[event.action_id]
            job = self.pending.get(event.action_id)
            if job is not None and job.done():
                del self.pending[event.action_id]
        paths = {
            "snapshot": action_url(event.action_id, "snapshot") if action.snapshot else None,
            "clip": action_url(event.action_id, "clip") if action.clip else None,
        }
        return dataclasses.replace(event, evidence=paths)

    def _start(self, event: Event, clip: Clip | None) -> _Action:
        recorder = self.recorders.get(event.camera)
        recording = self.settings.clips and recorder is not None and recorder.available()
        action = self._actions[event.action_id] = _Action(event.camera, event.label, False, recording)
        self.store.insert(
            Action(event.action_id, event.camera, event.label, event.person, event.model, event.start_time, None,
                   event.top_score, None, 0, None, 0, False)
        )  # fmt: skip
        if self.settings.snapshots:
            action.snapshot = self._snapshot(event, action, clip)
        if recording:
            assert recorder is not None
            final = self.store.path_of(evidence_path("clip", event.camera, event.action_id))
            since = event.start_time - self.settings.pre_s
            self._clips.submit(self._start_clip, recorder, event.action_id, since, final, event.camera)
        return action

    def _start_clip(
        self, recorder: Recorder, action_id: str, since: float, final: Path, camera: str
    ) -> None:  # clip worker
        if not recorder.start(action_id, since, final, camera):
            self.metrics.evidence_dropped.labels(kind="clip", reason="no_stream").inc()

    # -- snapshots -------------------------------------------------------------------------------------------------

    def _snapshot(self, event: Event, action: _Action, clip: Clip | None) -> bool:
        """Queues a snapshot of the event's clip; False when there is no frame to take it from."""
        frame_of = self._frame_source(event.camera, clip)
        if frame_of is None:
            self.metrics.evidence_dropped.labels(kind="snapshot", reason="no_frame").inc()
            return False
        if self._queued >= SNAPSHOT_QUEUE_MAX:
            self.metrics.evidence_dropped.labels(kind="snapshot", reason="busy").inc()
            return action.snapshot
        action.generation += 1
        action.snapshot_score = event.top_score
        self._queued += 1
        job = self._snapshots.submit(self._write_snapshot, event, action, action.generation, frame_of)
        self.pending[event.action_id] = job
        job.add_done_callback(lambda f: self._call(self._snapshot_done, event, f))
        return True

    def _frame_source(self, camera: str, clip: Clip | None) -> Callable[[], av.VideoFrame | None] | None:
        if camera in self.streams:  # the evidence stream's frame received with the clip's newest
            recorder = self.recorders[camera]
            at = clip.received_at if clip is not None else time.time()
            return lambda: recorder.frame_at(at)
        if clip is not None and clip.frame is not None:
            frame = clip.frame
            return lambda: frame
        own = self.recorders.get(camera)
        if own is not None and clip is not None:
            at = clip.received_at
            return lambda: own.frame_at(at)
        return None

    def _write_snapshot(
        self, event: Event, action: _Action, generation: int, frame_of: Callable[[], av.VideoFrame | None]
    ) -> bytes | None:  # the snapshot thread
        with action.lock:
            if generation != action.generation:
                return None  # a newer snapshot of this action is queued
            frame = frame_of()
            if frame is None:
                self.metrics.evidence_dropped.labels(kind="snapshot", reason="no_frame").inc()
                return None
            box, caption = None, ""
            if event.box is not None:
                box = event.box
                caption = f"{event.label} {event.top_score:.2f}" + (f"  #{event.person}" if event.person else "")
            try:
                jpeg = encode_jpeg(frame, quality=self.settings.jpeg_quality, box=box, caption=caption)
                relative = evidence_path("snapshot", event.camera, event.action_id)
                write_file(self.store.path_of(relative), jpeg)
                total = self.store.attach(event.action_id, "snapshot", relative, len(jpeg)).result()
            except Exception as e:
                log.error("camera %s: snapshot of %s not written: %s", event.camera, event.action_id, e)
                self.metrics.evidence_dropped.labels(kind="snapshot", reason="error").inc()
                return None
            self.metrics.snapshots_written.labels(camera=event.camera).inc()
            self._after_write(total)
            return jpeg

    def _snapshot_done(self, event: Event, job: Future[bytes | None]) -> None:  # event loop
        self._queued -= 1
        if self.pending.get(event.action_id) is job and event.action_id not in self._actions:
            del self.pending[event.action_id]
        jpeg = None if job.cancelled() or job.exception() else job.result()
        if jpeg is not None and self.sink is not None:
            with contextlib.suppress(RuntimeError):  # the sink has closed: the agent is stopping
                self.sink.publish_snapshot(event.camera, event.label, jpeg)

    # -- clips -----------------------------------------------------------------------------------------------------

    def _clip_done(self, finished: Finished) -> None:  # any thread
        if finished.path is None:
            reason = finished.reason.split(":")[0] or "no_video"
            if reason.startswith("error"):
                log.error("camera %s: clip of %s lost: %s", finished.camera, finished.action_id, finished.reason)
            self.metrics.evidence_dropped.labels(kind="clip", reason=reason).inc()
            return
        relative = finished.path.relative_to(self.store.root).as_posix()
        self.metrics.clips_written.labels(camera=finished.camera).inc()
        future = self.store.attach(finished.action_id, "clip", relative, finished.size)
        future.add_done_callback(lambda f: None if f.exception() else self._after_write(f.result()))
        log.debug(
            "camera %s: clip %s, %.1f s, %d bytes%s",
            finished.camera,
            relative,
            finished.end - finished.start,
            finished.size,
            f" ({finished.reason})" if finished.reason else "",
        )

    def _after_write(self, total: int) -> None:  # any thread
        self.metrics.evidence_bytes.set(total)
        if total > self.config.storage.max_gb * 1e9:
            self.store.retain(self._busy())

    def _busy(self) -> frozenset[str]:
        """Actions whose evidence is still being written."""
        recording = (a for r in self._recorders() for a in r.recording)
        return frozenset([*list(self._actions), *recording])

    # -- housekeeping ----------------------------------------------------------------------------------------------

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        last_retain = loop.time()
        while True:
            await asyncio.sleep(SWEEP_S)
            for recorder in self._recorders():
                self._clips.submit(recorder.sweep)
            if loop.time() - last_retain >= RETAIN_S:
                last_retain = loop.time()
                self.store.retain(self._busy())

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(callback, *args)

    async def snapshot_ready(self, action_id: str, timeout: float) -> None:
        """Waits (at most ``timeout``) for an action's snapshot being encoded."""
        job = self.pending.get(action_id)
        if job is not None and not job.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job)), timeout)

    def camera_up(self, camera: str) -> bool | None:
        """Whether a camera's evidence stream is up; None without one."""
        stream = self.streams.get(camera)
        return None if stream is None else stream.up

    def record_size(self, camera: str) -> tuple[int, int] | None:
        recorder = self.recorders.get(camera)
        return None if recorder is None else recorder.size
