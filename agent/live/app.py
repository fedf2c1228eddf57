"""Wires the stages: cameras → batchers → event trackers → sinks, plus metrics and stats.

Everything that can be wrong in the configuration or a model file fails in :meth:`Agent.load`, before any camera
starts. After that, one camera's or one model's failure never stops the others.

The collaborators are passed in (``runtimes``, ``sink``, ``camera_factory``); by default they come from the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from prometheus_client import start_http_server

from agent.config import AgentConfig, CameraConfig
from agent.live.batcher import Batcher
from agent.live.events import EventTracker, PersonEvents, unknown_labels
from agent.live.people import IouTracker, PersonDetector, open_detector
from agent.live.pipelines import CameraPipeline, ClipScoring, PersonScoring, Scoring
from agent.live.runtime import ModelRuntime, providers_for
from agent.live.sinks import MqttSink, Sink, StdoutSink
from agent.live.sources import Camera
from agent.metrics import Metrics
from agent.spec import ModelSpec

log = logging.getLogger("actionstream")
CameraFactory = Callable[[CameraConfig, ModelSpec, Metrics], Camera]


class _Stopping(Exception):
    """Raised inside the task group to end it: the stop event was set, or every camera has ended."""


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        metrics: Metrics | None = None,
        sink: Sink | None = None,
        runtimes: dict[str, ModelRuntime] | None = None,
        camera_factory: CameraFactory = Camera,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self.config = config
        self.shard = shard  # (i, n): this agent is replica i of n (agent/shard.py); its MQTT identity follows
        self.metrics = metrics or Metrics()
        self.sink = sink  # default: MQTT when configured, else stdout
        self.runtimes: dict[str, ModelRuntime] = runtimes or {}
        self.camera_factory = camera_factory
        self.detectors: dict[str, PersonDetector] = {}  # person models' detectors, by model name
        self.run_id = run_id()  # in every event id, so that ids stay unique across restarts
        self._loaded = False

    def load(self) -> None:
        """Open every model (fatal problems raise here, before anything starts) and warm it up."""
        for name, model in self.config.models.items():
            runtime = self.runtimes.get(name)
            if runtime is None:
                runtime = self.runtimes[name] = ModelRuntime(name, model)
                users = [c for c in self.config.cameras if self.config.model_of(c) == name]
                runtime.warm_up([1, min(len(users) or 1, model.max_batch)])
            spec = runtime.spec
            log.info(
                "model %s: %s (%d labels) on %s, max_batch %d",
                name,
                spec.arch,
                len(spec.labels),
                runtime.device,
                model.max_batch,
            )
            detector = open_detector(name, model, spec, providers_for(model))
            if detector is not None:
                self.detectors[name] = detector
                log.info("model %s: person detector %s (%s outputs)", name, detector.config.path, detector.layout)
        for camera in self.config.cameras:
            spec = self.runtimes[self.config.model_of(camera)].spec
            unknown = unknown_labels(self.config.events_of(camera), spec.labels)
            if unknown:
                log.warning("camera %s: event settings name labels the model lacks: %s", camera.name, unknown)
        self._loaded = True

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (or every camera, all files, has ended); then end every active action, mark
        the cameras and the agent offline and return."""
        if not self._loaded:
            self.load()
        server = None
        if self.config.metrics.enabled:
            server, _ = start_http_server(
                self.config.metrics.port, addr=self.config.metrics.host, registry=self.metrics.registry
            )
            log.info("metrics on http://%s:%d/metrics", self.config.metrics.host, self.config.metrics.port)
        try:
            async with contextlib.AsyncExitStack() as stack:
                sink = await stack.enter_async_context(self._sink())
                batchers = {name: Batcher(rt, self.metrics) for name, rt in self.runtimes.items()}
                pipelines = [self._wire(camera, batchers, sink) for camera in self.config.cameras]
                for pipeline in pipelines:
                    await stack.enter_async_context(pipeline.camera)
                try:
                    async with asyncio.TaskGroup() as tasks:
                        for name, batcher in batchers.items():
                            tasks.create_task(batcher.run(), name=f"batcher-{name}")
                        streams = []
                        for p in pipelines:
                            p.announce()
                            streams.append(tasks.create_task(p.stream(), name=f"camera-{p.name}"))
                            tasks.create_task(p.watch(), name=f"status-{p.name}")
                        if self.config.mqtt is not None:
                            tasks.create_task(self._stats(sink, pipelines), name="stats")
                        tasks.create_task(_stop_when(stop, streams), name="stop")
                except* _Stopping:
                    pass
                finally:
                    for pipeline in pipelines:
                        pipeline.finish()
        finally:
            if server is not None:
                server.shutdown()

    def _sink(self) -> Sink:
        if self.sink is not None:
            return self.sink
        if self.config.mqtt is None:
            return StdoutSink(self.metrics)
        return MqttSink(self.config.mqtt, self.metrics, shard=self.shard)

    def _wire(self, config: CameraConfig, batchers: dict[str, Batcher], sink: Sink) -> CameraPipeline:
        """A camera's pipeline, with the scoring behaviour its model calls for."""
        model = self.config.model_of(config)
        batcher, spec = batchers[model], self.runtimes[model].spec
        camera = self.camera_factory(config, spec, self.metrics)
        events = self.config.events_of(config)
        detector = self.detectors.get(model)
        scoring: Scoring
        if detector is None:
            tracker = EventTracker(camera=config.name, model=model, labels=spec.labels, config=events, run=self.run_id)
            scoring = ClipScoring(batcher, tracker, live=not camera.paced_by_consumer)
        else:
            people = IouTracker(min_iou=detector.config.min_iou, lost_after_s=detector.config.lost_after_s)
            person_events = PersonEvents(
                camera=config.name, model=model, labels=spec.labels, config=events, run=self.run_id
            )
            scoring = PersonScoring(batcher, person_events, detector, people, self.metrics)
        return CameraPipeline(camera, scoring, sink)

    async def _stats(self, sink: Sink, pipelines: list[CameraPipeline]) -> None:
        assert self.config.mqtt is not None
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


async def _stop_when(stop: asyncio.Event, streams: list[asyncio.Task]) -> None:
    """Raises :class:`_Stopping` once ``stop`` is set or every camera has ended (a shard without cameras idles,
    still serving metrics and MQTT, until stopped)."""
    stopped = asyncio.ensure_future(stop.wait())
    pending: set[asyncio.Future] = {stopped, *streams}
    try:
        while stopped in pending and (not streams or len(pending) > 1):
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    log.info("stopping")
    raise _Stopping


def run_id(now: float | None = None) -> str:
    """This run of the agent: its start in UNIX milliseconds, base 36 (8 characters until 2059, so ids sort by run)."""
    ms = int((time.time() if now is None else now) * 1000)
    digits = ""
    while ms:
        ms, d = divmod(ms, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
    return digits or "0"
