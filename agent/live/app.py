"""Wires the stages: cameras → batchers → event trackers → sinks, plus metrics and stats.

Everything that can be wrong in the configuration or a model file fails in :meth:`Agent.load`, before any camera
starts. After that, one camera's or one model's failure never stops the others.

The collaborators are passed in (``runtimes``, ``sink``, ``camera_factory``); by default they come from the config.
Camera entries that name the same stream get one :class:`agent.live.sources.Stream` (one connection, one decoder),
which the factory is handed with each entry's config; an entry that converts with the graph (``convert: graph``,
:func:`conversion_of`) is also handed its :class:`agent.live.graphconvert.Conversion` (``conversion=``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import av

from agent.config import AgentConfig, CameraConfig, stream_key
from agent.errors import ConfigError
from agent.flow import cv2_module
from agent.fusion import Fusion
from agent.live.batcher import Batcher
from agent.live.events import EventTracker, PersonEvents, tracked_labels, unknown_labels
from agent.live.evidence.keeper import Evidence
from agent.live.flowclips import FlowStage
from agent.live.graphconvert import Conversion, resolve
from agent.live.http import HttpServer
from agent.live.people import IouTracker, PersonDetector, open_detector
from agent.live.pipelines import CameraPipeline, ClipScoring, FusedScoring, PersonScoring, Scoring
from agent.live.runtime import ModelRuntime
from agent.live.sinks import MqttSink, Sink, StdoutSink
from agent.live.sources import Camera, Stream, hw_unavailable
from agent.live.webhooks import Webhooks
from agent.metrics import Metrics
from agent.spec import ModelSpec

log = logging.getLogger("actionstream")
# (config, the spec of its model (a fused camera: of each model, by name), metrics, stream), and conversion= for
# convert: graph
CameraFactory = Callable[..., Camera]
CAMERA_STATS = {  # key in the stats JSON → counter
    "frames_decoded": "actionstream_frames_decoded_total",
    "frames_sampled": "actionstream_frames_sampled_total",
    "reconnects": "actionstream_stream_reconnects_total",
}


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
        self._pipelines: list[CameraPipeline] = []
        self._batchers: dict[str, Batcher] = {}
        self._conversions: dict[str, Conversion] = {}  # by camera name, as wired
        self._sink_in_use: Sink | None = None
        self._started: float | None = None  # monotonic, once the cameras started
        self._groups = config.streams()  # the camera entries of each stream
        self._first_of = {c.name: group[0].name for group in self._groups.values() for c in group}

    def load(self) -> None:
        """Open every model (fatal problems raise here, before anything starts) and warm it up."""
        for name, model in self.config.models.items():
            runtime = self.runtimes.get(name)
            if runtime is None:
                runtime = self.runtimes[name] = ModelRuntime(name, model)
                runtime.warm_up(warm_up_sizes(self.config, name))
            spec = runtime.spec
            log.info(
                "model %s: %s (%d labels) on %s (%s), max_batch %d",
                name,
                spec.arch,
                len(spec.labels),
                runtime.device,
                runtime.choice.why,
                model.max_batch,
            )
            if spec.flow_input is not None:
                cv2_module()  # flow models need OpenCV's contrib build: say so now, not when a camera starts
            detector = open_detector(name, model, spec, runtime.device)
            if detector is not None:
                self.detectors[name] = detector
                log.info("model %s: person detector %s (%s outputs)", name, detector.config.path, detector.layout)
        check_zones(self.config, {name: runtime.spec for name, runtime in self.runtimes.items()})
        for camera in self.config.cameras:
            spec = self.runtimes[self.config.model_of(camera)].spec
            self._fusion(camera)  # fused models must all be clip models with the same labels
            conversion_of(camera, self.config, self.runtimes[self.config.model_of(camera)])  # graph: one RGB model
            unknown = unknown_labels(self.config.events_of(camera), spec.labels)
            if unknown:
                log.warning("camera %s: event settings name labels the model lacks: %s", camera.name, unknown)
        self._loaded = True

    def _fusion(self, camera: CameraConfig) -> Fusion | None:
        """The camera's score fusion (None without ``fusion``); a :class:`ConfigError` when its models cannot be
        fused."""
        if camera.fusion is None:
            return None
        specs = {m: self.runtimes[m].spec for m in camera.fusion.models}
        person = [m for m, spec in specs.items() if spec.task == "person"]
        if person:
            raise ConfigError(f"camera {camera.name}: fusion: {', '.join(person)} is a person model (clip models only)")
        try:
            return Fusion(camera.fusion.models, {m: spec.labels for m, spec in specs.items()})
        except ConfigError as e:
            raise ConfigError(f"camera {camera.name}: {e}") from None

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (or every camera, all files, has ended); then end every active action, mark
        the cameras and the agent offline and return."""
        if not self._loaded:
            self.load()
        async with contextlib.AsyncExitStack() as stack:
            evidence = Evidence(self.config, self.metrics) if self.config.evidence.enabled else None
            if self.config.metrics.enabled:
                await stack.enter_async_context(HttpServer(self.config, self.metrics, self, evidence))
            sink = self._sink_in_use = await stack.enter_async_context(self._sink())
            hooks = [(self.config.webhook_name(i), w) for i, w in enumerate(self.config.webhooks)]
            webhooks = await stack.enter_async_context(Webhooks(hooks, self.metrics)) if hooks else None
            batchers = self._batchers = {name: Batcher(rt, self.metrics) for name, rt in self.runtimes.items()}
            shared: dict[str, Stream] = {}
            pipelines = self._pipelines = [
                self._wire(camera, batchers, sink, evidence, webhooks, shared) for camera in self.config.cameras
            ]
            if evidence is not None:
                evidence.sink = sink
                await stack.enter_async_context(evidence)
            await stack.enter_async_context(_together([p.camera for p in pipelines]))
            self._started = time.monotonic()
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
            except BaseExceptionGroup as group:
                _, failed = group.split(_Stopping)
                if failed is not None:
                    raise _first(failed) from None
            finally:
                for pipeline in pipelines:
                    pipeline.finish()

    def _sink(self) -> Sink:
        if self.sink is not None:
            return self.sink
        if self.config.mqtt is None:
            return StdoutSink(self.metrics)
        return MqttSink(self.config.mqtt, self.metrics, shard=self.shard)

    def _wire(
        self,
        config: CameraConfig,
        batchers: dict[str, Batcher],
        sink: Sink,
        evidence: Evidence | None = None,
        webhooks: Webhooks | None = None,
        streams: dict[str, Stream] | None = None,
    ) -> CameraPipeline:
        """A camera's pipeline, with the scoring behaviour its model(s) call for; its stream from ``streams`` (by
        :func:`agent.config.stream_key`), made for the first entry that names it."""
        model = self.config.model_of(config)
        batcher, spec = batchers[model], self.runtimes[model].spec
        models = self.config.models_of(config)
        specs = {m: self.runtimes[m].spec for m in models}
        streams = {} if streams is None else streams
        key = stream_key(config)
        stream = streams.get(key)
        if stream is None:
            group = self._groups.get(key) or [config]
            stream = streams[key] = Stream(group[0], self.metrics, cameras=[c.name for c in group])
        conversion = self._conversions[config.name] = conversion_of(config, self.config, self.runtimes[model])
        graph = {"conversion": conversion} if conversion.mode == "graph" else {}
        camera = self.camera_factory(
            config, specs if config.fusion is not None else spec, self.metrics, stream, **graph
        )
        if evidence is not None:
            evidence.attach(config, camera)
        events = self.config.events_of(config)
        detector = self.detectors.get(model)
        flows = {
            m: FlowStage(specs[m], config.name, self.metrics, method=self.config.models[m].flow_method)
            for m in models
            if specs[m].flow_input is not None
        }
        fusion = self._fusion(config)
        scoring: Scoring
        if fusion is not None:
            tracker = EventTracker(
                camera=config.name, model="+".join(models), labels=fusion.labels, config=events, run=self.run_id
            )
            mine = {m: batchers[m] for m in models}
            scoring = FusedScoring(mine, fusion, tracker, live=not camera.paced_by_consumer, flows=flows)
        elif detector is None:
            tracker = EventTracker(camera=config.name, model=model, labels=spec.labels, config=events, run=self.run_id)
            scoring = ClipScoring(batcher, tracker, live=not camera.paced_by_consumer, flow=flows.get(model))
        else:
            people = IouTracker(min_iou=detector.config.min_iou, lost_after_s=detector.config.lost_after_s)
            person_events = PersonEvents(
                camera=config.name, model=model, labels=spec.labels, config=events, run=self.run_id, zones=config.zones
            )
            scoring = PersonScoring(batcher, person_events, detector, people, self.metrics)
        pipeline = CameraPipeline(camera, scoring, sink, evidence=evidence, webhooks=webhooks)
        for m in models:
            batchers[m].watch(pipeline.model_changed)
        return pipeline

    # -- what the HTTP server shows (agent.live.http.AgentView) ----------------------------------------------------

    def cameras_view(self) -> list[dict[str, Any]]:
        """Each camera: up, decoded fps, seconds since its newest frame, model, labels and those active now."""
        now = time.time()
        out = []
        evidence_streams = {}
        for p in self._pipelines:
            evidence = p.evidence
            if evidence is not None and p.name in evidence.streams:
                evidence_streams[p.name] = {"up": evidence.streams[p.name].up}
        for p in self._pipelines:
            camera = p.camera
            latest = getattr(camera, "latest", None)
            out.append(
                {
                    "name": p.name,
                    "up": bool(camera.up),
                    "fps": round(float(getattr(camera, "fps", 0.0)) if camera.up else 0.0, 1),
                    "last_frame_age_s": None if latest is None else round(max(0.0, now - latest[1]), 3),
                    "model": p.tracker.model,
                    "labels": tracked_labels(p.tracker.config, p.tracker.labels),
                    "active": sorted(label for label, on in p.tracker.active().items() if on),
                    "latest": f"/api/cameras/{p.name}/latest.jpg",
                    "convert": _convert_view(self._conversions.get(p.name)),
                    "record": evidence_streams.get(p.name),
                }
            )
        return out

    def latest_frame(self, camera: str) -> av.VideoFrame | None:
        for p in self._pipelines:
            if p.name == camera:
                latest = getattr(p.camera, "latest", None)
                return None if latest is None else latest[0]
        return None

    def not_ready(self) -> list[str]:
        """Why the agent is not ready (the readiness probe), or nothing: each model with cameras has run within
        :func:`ready_within` of its last run (or of the start), and the sink delivers or queues within its bound."""
        if self._started is None:
            return ["starting: the cameras have not started yet"]
        now, reasons = time.monotonic(), []
        for name, batcher in self._batchers.items():
            cameras = [c for c in self.config.cameras if name in self.config.models_of(c)]
            if not cameras:
                continue
            if not batcher.up:
                reasons.append(f"model {name}: down (its runs keep failing)")
                continue
            bound = ready_within(self.runtimes[name].spec, cameras)
            since = now - (batcher.last_done if batcher.last_done is not None else self._started)
            if since > bound:
                reasons.append(f"model {name}: no inference for {since:.0f} s (expected within {bound:.0f} s)")
        problem = getattr(self._sink_in_use, "problem", None)
        found = problem() if callable(problem) else None
        if found:
            reasons.append(found)
        return reasons

    async def _stats(self, sink: Sink, pipelines: list[CameraPipeline]) -> None:
        """``{prefix}/stats`` every ``stats_interval_s``: one pass over the metrics, in a thread (hundreds of cameras
        and labels make a registry that takes a while to read)."""
        assert self.config.mqtt is not None
        while True:
            await asyncio.sleep(self.config.mqtt.stats_interval_s)
            try:
                totals = await asyncio.to_thread(self._totals)
                cameras = {
                    p.name: {
                        "up": p.camera.up,
                        **{
                            key: totals.get((metric, self._counted_as(p.name, metric)), 0.0)
                            for key, metric in CAMERA_STATS.items()
                        },
                        "active": sorted(label for label, on in p.tracker.active().items() if on),
                    }
                    for p in pipelines
                }
                models = {
                    n: {"clips": totals.get(("actionstream_clips_inferred_total", n), 0.0)} for n in self.runtimes
                }
                sink.publish_stats({"time": round(time.time(), 3), "cameras": cameras, "models": models})
            except Exception:
                log.exception("stats: not published this time")

    def _counted_as(self, camera: str, metric: str) -> str:
        """The camera name a camera's counter is under: a stream's frames under its first entry's."""
        return self._first_of.get(camera, camera) if metric == CAMERA_STATS["frames_decoded"] else camera

    def _totals(self) -> dict[tuple[str, str], float]:
        """(sample name, camera or model) → value, for the counters the stats report."""
        wanted = {*CAMERA_STATS.values(), "actionstream_clips_inferred_total"}
        return {
            (sample.name, sample.labels.get("camera") or sample.labels.get("model", "")): sample.value
            for family in self.metrics.registry.collect()
            for sample in family.samples
            if sample.name in wanted
        }


def _first(group: BaseExceptionGroup) -> BaseException:
    """The first of a task group's errors (a model that kept failing, say), to be raised on its own."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def conversion_of(camera: CameraConfig, config: AgentConfig, runtime: ModelRuntime) -> Conversion:
    """How ``camera``'s frames become its model's input (``cameras[].convert``, resolved: see
    :func:`agent.live.graphconvert.resolve`). A fused camera's and a flow model's frames are converted on the CPU
    (``convert: graph`` there is a :class:`ConfigError`)."""
    model = config.models[config.model_of(camera)]
    if camera.fusion is not None or runtime.spec.flow_input is not None:
        what = "fuses several models" if camera.fusion is not None else f"feeds flow model {config.model_of(camera)!r}"
        if camera.convert == "graph":
            raise ConfigError(
                f"camera {camera.name!r}: convert: graph converts frames for one RGB model, and this camera {what}: "
                "remove `convert` (or set it to cpu)"
            )
        return Conversion(why=f"the camera {what}: converted on the CPU")
    return resolve(
        camera.convert,
        model_device=runtime.device,
        device_id=model.device_id,
        decodes_on_gpu=camera.hwaccel != "off" and hw_unavailable("cuda") is None,
        person=runtime.spec.task == "person",
    )


def _convert_view(conversion: Conversion | None) -> dict[str, Any]:
    """``/api/cameras``' ``convert``: the mode, where the graph runs, whether clips stay there, and why."""
    c = conversion or Conversion()
    device = f"{c.device}:{c.device_id}" if c.mode == "graph" else None
    return {"mode": c.mode, "device": device, "on_device": c.on_device, "why": c.why}


def check_zones(config: AgentConfig, specs: dict[str, ModelSpec]) -> None:
    """Zones are where people stand: a camera whose model scores whole clips may not have any (ConfigError)."""
    for camera in config.cameras:
        model = config.model_of(camera)
        if camera.zones and specs[model].task != "person":
            raise ConfigError(
                f"camera {camera.name!r}: zones need a person model (task: person); model {model!r} "
                f"({config.models[model].path}) scores whole clips: remove `zones` (or use `region`)"
            )


def ready_within(spec: ModelSpec, cameras: list[CameraConfig]) -> float:
    """How long a model with these cameras may go without a run and still be ready: three times a clip's span plus
    the longest ``every_s``, plus 10 s (a first clip needs a span of frames; a camera may reconnect)."""
    return 3 * (spec.span_s + max(c.every_s for c in cameras)) + 10.0


def warm_up_sizes(config: AgentConfig, model: str) -> list[int]:
    """The batch sizes a model is run at before the cameras start: one clip, and as many as its cameras give."""
    users = sum(model in config.models_of(c) for c in config.cameras)
    return [1, min(users or 1, config.models[model].max_batch)]


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


@contextlib.asynccontextmanager
async def _together(cameras: list[Camera]) -> AsyncIterator[None]:
    """Starts every camera; on the way out stops them all at once, so a shutdown waits for the slowest camera, not
    for the sum of them (cameras stuck opening a stream, say)."""
    started = []
    try:
        for camera in cameras:
            await camera.__aenter__()
            started.append(camera)
        yield
    finally:
        await asyncio.gather(*(camera.__aexit__(None, None, None) for camera in started))
