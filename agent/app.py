"""Wires the stages: cameras → batchers → event trackers → sinks, plus metrics and stats.

Everything that can be wrong in the configuration or a model file fails in :meth:`Agent.load`, before any
camera starts. After that, one camera's or one model's failure never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from prometheus_client import start_http_server

from agent.config import AgentConfig, CameraConfig
from agent.events import Event, EventTracker, tracked_labels, unknown_labels
from agent.metrics import Metrics
from agent.runtime import Batcher, ModelRuntime
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


class _Pipeline:
    """One camera's path: clips → its model's batcher → its event tracker → the sink; and its status."""

    def __init__(self, agent: Agent, config: CameraConfig, batchers: dict[str, Batcher], sink) -> None:
        model = agent.config.model_of(config)
        runtime = agent.runtimes[model]
        self.name, self.sink, self.batcher = config.name, sink, batchers[model]
        self.camera = Camera(config, runtime.spec, agent.metrics)
        self.tracker = EventTracker(
            camera=config.name, model=model, labels=runtime.spec.labels, config=agent.config.events_of(config)
        )
        self.clips_task: asyncio.Task | None = None

    def start(self) -> list[asyncio.Task]:
        self.sink.announce(self.name, tracked_labels(self.tracker.config, self.tracker.labels))
        self.clips_task = asyncio.create_task(self._clips(), name=f"camera-{self.name}")
        return [self.clips_task, asyncio.create_task(self._status(), name=f"status-{self.name}")]

    async def _clips(self) -> None:
        async for clip in self.camera.clips():
            try:
                scores, inference_ms = await self.batcher.infer(clip)
            except Exception:  # logged by the batcher; this clip is lost, the camera goes on
                continue
            events = self.tracker.update(
                scores,
                clip_start=clip.start,
                clip_end=clip.end,
                received_at=clip.received_at,
                inference_ms=inference_ms,
            )
            self._publish(events)

    async def _status(self) -> None:
        up = None
        while True:
            if self.camera.up != up:
                up = self.camera.up
                self.sink.publish_status(self.name, up)
                if not up:
                    self._publish(self.tracker.stream_down(time.time()))
            await asyncio.sleep(STATUS_POLL_S)

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self.sink.publish_event(event)
            if event.type in ("start", "end"):
                self.sink.publish_state(self.name, event.label, event.type == "start")

    def finish(self, now: float) -> None:
        """Clean shutdown: end every active action and mark the camera offline."""
        self._publish(self.tracker.close(now))
        self.sink.publish_status(self.name, False)
