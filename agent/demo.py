"""``actionstream demo`` (``make demo``): the embedded default, proving itself with numbers.

Plays the scripted synthetic stream (generated on first run, cached) as a live camera at real-time pacing,
runs the agent with the bundled motion model, prints events as they happen, and ends with a scorecard against
the stream's ground-truth schedule: segment precision / recall / F1 at temporal IoU >= 0.5, mean start delay,
and capture→publish latency percentiles. Events go to a local MQTT broker when one is given or reachable on
localhost:1883, else only to the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config import parse_config
from agent.events import Event
from agent.sinks import MqttSink, Sink

ROOT = Path(__file__).resolve().parents[1]
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


@dataclass(frozen=True)
class Segment:
    label: str
    start: float
    end: float


def tiou(a: Segment, b: Segment) -> float:
    inter = max(0.0, min(a.end, b.end) - max(a.start, b.start))
    union = max(a.end, b.end) - min(a.start, b.start)
    return inter / union if union > 0 else 0.0


def score(truth: list[Segment], found: list[Segment], *, threshold: float = 0.5) -> dict:
    """Greedy one-to-one matching of same-label segments by temporal IoU (highest first)."""
    pairs = sorted(
        ((tiou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found) if t.label == f.label),
        reverse=True,
    )
    used_t, used_f, delays = set(), set(), []
    for iou, i, j in pairs:
        if iou < threshold or i in used_t or j in used_f:
            continue
        used_t.add(i)
        used_f.add(j)
        delays.append(found[j].start - truth[i].start)
    tp = len(used_t)
    precision = tp / len(found) if found else 0.0
    recall = tp / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "segments": len(truth),
        "detected": len(found),
        "matched": tp,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_start_delay_s": float(np.mean(delays)) if delays else None,
    }


def segments_from_events(events: Iterable[dict], origin: float, shift_s: float) -> list[Segment]:
    """start→end pairs per label, in stream seconds: wall-clock minus ``origin``, minus ``shift_s``.

    ``shift_s`` (half the model's span) moves each time from the end of the clip that decided it to the clip's
    centre, which is when what the clip saw happened on average.
    """
    open_: dict[str, float] = {}
    out = []
    for e in events:
        t = (e["start_time"] if e["type"] == "start" else (e["end_time"] or 0.0)) - origin - shift_s
        if e["type"] == "start":
            open_[e["label"]] = t
        elif e["type"] == "end" and e["label"] in open_:
            out.append(Segment(e["label"], open_.pop(e["label"]), t))
    return out


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
        from train.synthetic import write_scripted_stream  # numpy + PyAV only

        print(f"generating the scripted stream ({STREAM_MINUTES:g} min) in {directory} ...", flush=True)
        write_scripted_stream(video, schedule, minutes=STREAM_MINUTES, seed=STREAM_SEED)
    return video, [Segment(s["label"], s["start"], s["end"]) for s in json.loads(schedule.read_text())]


def _broker_reachable(host: str = "127.0.0.1", port: int = 1883) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def run_demo(model: Path = DEMO_MODEL, mqtt: str | None = None) -> dict:
    video, truth = ensure_stream()
    if mqtt is None and _broker_reachable():
        mqtt = "mqtt://127.0.0.1:1883"
    mqtt = mqtt or None  # "" means: terminal only
    config = parse_config(
        {
            "cameras": [{"name": "demo", "url": str(video), "realtime": True, "every_s": 0.5}],
            "models": {"motion": {"path": str(model), "max_batch": 1}},
            "events": DEMO_EVENTS,
            "metrics": {"enabled": False},
            **({"mqtt": {"url": mqtt}} if mqtt else {}),
        },
        "demo",
    )
    from agent.app import Agent

    origin: list[float] = []
    agent = Agent(config)
    agent.load()
    inner = MqttSink(config.mqtt, agent.metrics) if config.mqtt else None
    sink = RecordingSink(inner, origin)
    agent.sink = sink
    spec = agent.runtimes["motion"].spec
    print(f"model {model.name}: {spec.arch}, labels {', '.join(spec.labels)}")
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


def print_scorecard(card: dict) -> None:
    delay = card["mean_start_delay_s"]
    print("\nscorecard (temporal IoU >= 0.5)")
    print(f"  actions {card['segments']}, detected {card['detected']}, matched {card['matched']}")
    print(f"  precision {card['precision']:.3f}  recall {card['recall']:.3f}  F1 {card['f1']:.3f}")
    print(f"  mean start delay {'n/a' if delay is None else f'{delay:+.2f} s'}")
    print(f"  capture→publish latency p50 {card['latency_p50_ms']:.0f} ms, p99 {card['latency_p99_ms']:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="actionstream demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEMO_MODEL)
    p.add_argument(
        "--mqtt", help='broker URL (default: mqtt://127.0.0.1:1883 when reachable, else terminal only; "" = terminal)'
    )
    args = p.parse_args(argv)
    run_demo(args.model, args.mqtt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
