"""Wires the stages: cameras → batchers → event trackers → sinks, plus metrics and stats.

Everything that can be wrong in the configuration or a model file fails in :meth:`Agent.load`, before any
camera starts. After that, one camera's or one model's failure never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from prometheus_client import start_http_server

from agent.clips import Clip
from agent.config import AgentConfig, CameraConfig
from agent.events import Event, EventTracker, PersonEvents, tracked_labels, unknown_labels
from agent.metrics import Metrics
from agent.people import IouTracker, PersonDetector, open_detector
from agent.redact import Redactor
from agent.runtime import Batcher, ModelRuntime, providers_for
from agent.sinks import MqttSink, Sink, StdoutSink
from agent.sources import Camera

log = logging.getLogger("actionstream")
STATUS_POLL_S = 0.25


class Agent:
    def __init__(self, config: AgentConfig, metrics: Metrics | None = None, sink: Sink | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.sink = sink  # default: MQTT when configured, else stdout
        self.runtimes: dict[str, ModelRuntime] = {}
        self.detectors: dict[str, PersonDetector] = {}  # person models' detectors, by model name

    def load(self) -> None:
        """Open every model (fatal problems raise here, before anything starts) and warm it up."""
        for name, model in self.config.models.items():
            runtime = ModelRuntime(name, model)
            users = [c for c in self.config.cameras if self.config.model_of(c) == name]
            runtime.warm_up([1, min(len(users) or 1, model.max_batch)])
            log.info(
                "model %s: %s (%d labels) on %s, max_batch %d",
                name,
                runtime.spec.arch,
                len(runtime.spec.labels),
                runtime.device,
                model.max_batch,
            )
            self.runtimes[name] = runtime
            detector = open_detector(name, model, runtime.spec, providers_for(model))
            if detector is not None:
                self.detectors[name] = detector
                log.info(
                    "model %s: person detector %s (%s outputs)", name, model.detector.path, self.detectors[name].layout
                )
        for camera in self.config.cameras:
            spec = self.runtimes[self.config.model_of(camera)].spec
            unknown = unknown_labels(self.config.events_of(camera), spec.labels)
            if unknown:
                log.warning("camera %s: event settings name labels the model lacks: %s", camera.name, unknown)

    async def run(self, stop: asyncio.Event) -> None:
        if not self.runtimes:
            self.load()
        server = None
        if self.config.metrics.enabled:
            server, _ = start_http_server(
                self.config.metrics.port, addr=self.config.metrics.host, registry=self.metrics.registry
            )
            log.info("metrics on http://%s:%d/metrics", self.config.metrics.host, self.config.metrics.port)
        sink = self.sink or (MqttSink(self.config.mqtt, self.metrics) if self.config.mqtt else StdoutSink(self.metrics))
        batchers = {name: Batcher(rt, self.metrics) for name, rt in self.runtimes.items()}
        try:
            async with sink, contextlib.AsyncExitStack() as stack:
                tasks = [asyncio.create_task(b.run(), name=f"batcher-{n}") for n, b in batchers.items()]
                pipelines = []
                for camera_config in self.config.cameras:
                    pipeline = _Pipeline(self, camera_config, batchers, sink)
                    await stack.enter_async_context(pipeline.camera)
                    pipelines.append(pipeline)
                    tasks += pipeline.start()
                if isinstance(sink, MqttSink):
                    tasks.append(asyncio.create_task(self._stats(sink, pipelines), name="stats"))
                # A shard without cameras (agent/shard.py) idles until stopped, still serving metrics and MQTT.
                cameras_done = (
                    asyncio.gather(*(p.clips_task for p in pipelines), return_exceptions=True)
                    if pipelines
                    else asyncio.get_running_loop().create_future()
                )
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait([stopped, cameras_done], return_when=asyncio.FIRST_COMPLETED)
                log.info("stopping")
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                stopped.cancel()
                for pipeline in pipelines:
                    pipeline.finish(time.time())
        finally:
            if server is not None:
                server.shutdown()

    async def _stats(self, sink: MqttSink, pipelines: list[_Pipeline]) -> None:
        value = self.metrics.value
        while True:
            await asyncio.sleep(self.config.mqtt.stats_interval_s)
            cameras = {
                p.name: {
                    "up": p.camera.up,
                    "frames_decoded": value("actionstream_frames_decoded_total", camera=p.name),
                    "frames_sampled": value("actionstream_frames_sampled_total", camera=p.name),
                    "reconnects": value("actionstream_stream_reconnects_total", camera=p.name),
                    "active": sorted(label for label, on in p.tracker.active().items() if on),
                }
                for p in pipelines
            }
            models = {n: {"clips": value("actionstream_clips_inferred_total", model=n)} for n in self.runtimes}
            sink.publish_stats({"time": round(time.time(), 3), "cameras": cameras, "models": models})


def _replaced(future: asyncio.Future) -> bool:
    """Whether a batcher future was resolved by a newer clip taking its place (see :meth:`Batcher.submit`)."""
    return future.done() and not future.cancelled() and future.exception() is None and future.result() is None


class _Pipeline:
    """One camera's path: clips → its model's batcher → its event tracker → the sink; and its status.

    Person models add a step: the detector finds people on the clip's key frame (its centre), the IoU tracker
    gives them ids, and the model scores each person's box."""

    def __init__(self, agent: Agent, config: CameraConfig, batchers: dict[str, Batcher], sink) -> None:
        model = agent.config.model_of(config)
        runtime = agent.runtimes[model]
        self.name, self.sink, self.batcher, self.metrics = config.name, sink, batchers[model], agent.metrics
        self.camera = Camera(config, runtime.spec, agent.metrics)
        self.redact = Redactor(config.url.get_secret_value())
        tracker = dict(
            camera=config.name, model=model, labels=runtime.spec.labels, config=agent.config.events_of(config)
        )
        self.detector = agent.detectors.get(model)
        if self.detector is not None:
            detector = agent.config.models[model].detector
            self.people = IouTracker(min_iou=detector.min_iou, lost_after_s=detector.lost_after_s)
            self.detect_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"detect-{config.name}")
            self.tracker: EventTracker | PersonEvents = PersonEvents(**tracker)
        else:
            self.tracker = EventTracker(**tracker)
        self.key_input = min(runtime.spec.inputs, key=lambda i: i.stride_s).name
        self.detector_label = f"{model}/detector"
        self.states: dict[str, bool] = {}  # last published ON/OFF per label
        self.clips_task: asyncio.Task | None = None

    def start(self) -> list[asyncio.Task]:
        self.sink.announce(self.name, tracked_labels(self.tracker.config, self.tracker.labels))
        self.clips_task = asyncio.create_task(self._clips(), name=f"camera-{self.name}")
        self.clips_task.add_done_callback(self._ended)
        return [self.clips_task, asyncio.create_task(self._status(), name=f"status-{self.name}")]

    def _ended(self, task: asyncio.Task) -> None:
        """A pipeline that fails stops only its camera; it says so (a bug, never bad input: those are handled)."""
        if not task.cancelled() and task.exception() is not None:
            e = task.exception()
            log.error("camera %s: its pipeline stopped: %s", self.name, self.redact(f"{type(e).__name__}: {e}"))

    async def _clips(self) -> None:
        """Takes the camera's clips and hands them to the batcher; :meth:`_results` applies their scores in order.

        A live camera's clip goes in as soon as it is ready, while the previous one may still be running (a newer
        clip replaces it in the batcher until a batch takes it), so under load it joins the next batch instead of
        waiting for its predecessor's result. A consumer-paced file keeps two clips in, none dropped; a person model
        takes one clip at a time, so the detector runs only on clips that will be scored.
        """
        order: deque[tuple[asyncio.Future, dict, tuple | None] | None] = deque()  # what _results has not taken yet
        added = asyncio.Event()
        replace = self.detector is None and not self.camera.paced_by_consumer
        slots = None if replace else asyncio.Semaphore(1 if self.detector is not None else 2)
        results = asyncio.create_task(self._results(order, added, slots))
        try:
            async for clip in self.camera.clips():
                times = dict(clip_start=clip.start, clip_end=clip.end, received_at=clip.received_at)
                if slots is not None:
                    await slots.acquire()
                if self.detector is None:
                    future, found = self.batcher.submit(clip, replace=replace), None
                    if order and _replaced(order[-1][0]):  # (the end marker comes after the loop)
                        order.pop()  # the clip this one replaced
                else:
                    try:
                        future, found = await self._scored_people(clip)
                    except Exception:  # logged by _people; this clip is lost, the camera goes on
                        slots.release()
                        continue
                order.append((future, times, found))
                added.set()
            order.append(None)  # the camera has ended: apply what is in flight, then stop
            added.set()
            await results
        finally:
            results.cancel()
            for item in order:  # stopping: nobody will look at these any more
                if item is not None:
                    item[0].cancel()

    async def _results(self, order: deque, added: asyncio.Event, slots: asyncio.Semaphore | None) -> None:
        while True:
            while not order:
                added.clear()
                await added.wait()
            item = order.popleft()
            if item is None:
                return
            future, times, found = item
            try:
                result = await future
                if result is None:  # replaced by the camera's newer clip (counted by the batcher)
                    continue
                scores, inference_ms = result
                if found is None:
                    events = self.tracker.update(scores, inference_ms=inference_ms, **times)
                else:
                    people, lost = found
                    events = self.tracker.update(people, scores, lost=lost, inference_ms=inference_ms, **times)
                self._publish(events)
            except Exception:  # logged by the batcher; this clip is lost, the camera goes on
                pass
            finally:
                if slots is not None:
                    slots.release()

    async def _scored_people(self, clip: Clip) -> tuple[asyncio.Future, tuple]:
        """Person models: the people on the clip and the future of their scores (resolved at once when none)."""
        people, lost = await self._people(clip)
        if people:
            return self.batcher.submit(clip, np.float32([p.box for p in people])), (people, lost)
        future = asyncio.get_running_loop().create_future()
        future.set_result((np.zeros((0, len(self.tracker.labels))), 0.0))
        return future, (people, lost)

    async def _people(self, clip: Clip) -> tuple[list, list[int]]:
        frames = clip.inputs[self.key_input]
        t0 = time.perf_counter()
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                self.detect_executor, self.detector.detect, frames[len(frames) // 2]
            )
        except Exception as e:
            log.error("camera %s: person detector failed: %s", self.name, e)
            raise
        self.metrics.inference_seconds.labels(model=self.detector_label).observe(time.perf_counter() - t0)
        return self.people.update(found, clip.received_at)

    async def _status(self) -> None:
        up = None
        while True:
            if self.camera.up != up:
                up = self.camera.up
                self.sink.publish_status(self.name, up)
                if not up:
                    self._publish(self.tracker.stream_down(time.time()))
                    if self.detector is not None:
                        self.people.reset()
            await asyncio.sleep(STATUS_POLL_S)

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self.sink.publish_event(event)
        for label, on in self.tracker.active().items():  # person models: ON while anyone does it
            if self.states.get(label, False) != on:
                self.states[label] = on
                self.sink.publish_state(self.name, label, on)

    def finish(self, now: float) -> None:
        """Clean shutdown: end every active action and mark the camera offline."""
        self._publish(self.tracker.close(now))
        self.sink.publish_status(self.name, False)
        if self.detector is not None:
            self.detect_executor.shutdown(wait=False, cancel_futures=True)
