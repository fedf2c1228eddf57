"""``actionstream demo`` (``make demo``): the embedded default, proving itself with numbers.

Plays the scripted synthetic stream (generated on first run, cached) as a live camera at real-time pacing,
runs the agent with the bundled motion model, prints events as they happen, and ends with a scorecard against
the stream's ground-truth schedule: segment precision / recall / F1 at temporal IoU >= 0.5, mean start delay,
and capture→publish latency percentiles. Events go to a local MQTT broker when one is given or reachable on
localhost:1883, else only to the terminal.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import numpy as np

from agent.config import parse_config
from agent.demo.scorecard import Segment, print_scorecard, score, segments_from_events
from agent.demo.synthetic import write_scripted_stream
from agent.live.app import Agent, conversion_of
from agent.live.events import Event
from agent.live.sinks import MqttSink, Sink
from agent.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL = ROOT / "models" / "motion_demo.onnx"
STREAM_DIR = ROOT / ".cache" / "demo"
STREAM_SEED, STREAM_MINUTES = 7, 1.5
IDLE_LABEL = "still"
DEMO_EVENTS = {
    "threshold": 0.6,
    "end_threshold": 0.4,
    "min_hits": 2,
    "end_after_s": 0.5,
    "exclude": [IDLE_LABEL],
}


class RecordingSink:
    """Prints each event as a line, records it for the scorecard, and forwards everything to ``inner``."""

    def __init__(self, inner: Sink | None, origin: list[float]) -> None:
        self.inner, self.origin = inner, origin
        self.events: list[dict] = []
        self.latencies_ms: list[float] = []

    def publish_event(self, event: Event) -> None:
        now = time.time()
        payload = event.payload(now)
        self.events.append(payload)
        self.latencies_ms.append(payload["latency_ms"]["capture_to_publish"])
        t = event.received_at - (self.origin[0] if self.origin else event.received_at)
        print(f"  {t:6.1f} s  {event.type:<6} {event.label:<12} score {event.score:.2f}", flush=True)
        if self.inner:
            self.inner.publish_event(event)

    def publish_state(self, camera: str, label: str, on: bool) -> None:
        if self.inner:
            self.inner.publish_state(camera, label, on)

    def publish_status(self, camera: str, online: bool) -> None:
        if self.inner:
            self.inner.publish_status(camera, online)

    def publish_stats(self, stats: dict) -> None:
        if self.inner:
            self.inner.publish_stats(stats)

    def publish_snapshot(self, camera: str, label: str, jpeg: bytes) -> None:
        if self.inner:
            self.inner.publish_snapshot(camera, label, jpeg)

    def announce(self, camera: str, labels) -> None:
        if self.inner:
            self.inner.announce(camera, labels)

    async def __aenter__(self) -> RecordingSink:
        if self.inner:
            await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.inner:
            await self.inner.__aexit__(*exc)


def ensure_stream(directory: Path = STREAM_DIR) -> tuple[Path, list[Segment]]:
    """The scripted stream and its schedule, generated once and cached."""
    video, schedule = directory / f"scripted_{STREAM_SEED}.mp4", directory / f"scripted_{STREAM_SEED}.json"
    if not (video.exists() and schedule.exists()):
        print(f"generating the scripted stream ({STREAM_MINUTES:g} min) in {directory} ...", flush=True)
        write_scripted_stream(video, schedule, minutes=STREAM_MINUTES, seed=STREAM_SEED)
    return video, [Segment(s["label"], s["start"], s["end"]) for s in json.loads(schedule.read_text())]


def _broker_reachable(host: str = "127.0.0.1", port: int = 1883) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def run_demo(
    model: Path | None = None,
    mqtt: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    convert: str | None = None,
) -> dict:
    """Play the stream through the agent and print the scorecard; ``device`` and ``precision`` as the model's
    config keys (``make demo``: auto, fp32), ``convert`` as the camera's (None: its default)."""
    model = model or DEMO_MODEL
    video, truth = ensure_stream()
    if mqtt is None and _broker_reachable():
        mqtt = "mqtt://127.0.0.1:1883"
    mqtt = mqtt or None  # "" means: terminal only
    config = parse_config(
        {
            "cameras": [
                {"name": "demo", "url": str(video), "realtime": True, "every_s": 0.5}
                | ({"convert": convert} if convert else {})
            ],
            "models": {"motion": {"path": str(model), "max_batch": 1, "device": device, "precision": precision}},
            "events": DEMO_EVENTS,
            "metrics": {"enabled": False},
            **({"mqtt": {"url": mqtt}} if mqtt else {}),
        },
        "demo",
    )
    origin: list[float] = []
    metrics = Metrics()
    sink = RecordingSink(MqttSink(config.mqtt, metrics) if config.mqtt else None, origin)
    agent = Agent(config, metrics=metrics, sink=sink)
    agent.load()
    runtime = agent.runtimes["motion"]
    spec = runtime.spec
    print(f"model {model.name}: {spec.arch}, labels {', '.join(spec.labels)}")
    print(f"engine: {runtime.choice.engine} ({runtime.device}, {precision}) — {runtime.choice.why}")
    conversion = conversion_of(config.cameras[0], config, runtime)
    print(f"convert: {conversion.describe()} ({conversion.why})")
    print(f"stream {video.name}: {len(truth)} actions in {STREAM_MINUTES * 60:.0f} s; events to {mqtt or 'terminal'}")

    async def main() -> None:
        stop = asyncio.Event()
        started = time.time()
        origin.append(started)  # stream time 0 plays now (real-time pacing)
        await agent.run(stop)

    asyncio.run(main())
    found = segments_from_events(sink.events, origin[0], spec.span_s / 2)
    card = score([t for t in truth if t.label != IDLE_LABEL], found)
    lat = np.asarray(sink.latencies_ms) if sink.latencies_ms else np.asarray([np.nan])
    card |= {"latency_p50_ms": float(np.percentile(lat, 50)), "latency_p99_ms": float(np.percentile(lat, 99))}
    print_scorecard(card)
    return card
