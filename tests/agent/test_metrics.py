"""The metrics contract: every metric of docs/contracts.md, in a form Prometheus' own promtool accepts."""

from __future__ import annotations

import shutil
import subprocess

from prometheus_client import generate_latest

from agent.metrics import Metrics

DESIGN_METRICS = [
    "actionstream_frames_decoded_total",
    "actionstream_frames_sampled_total",
    "actionstream_frames_dropped_total",
    "actionstream_stream_up",
    "actionstream_stream_reconnects_total",
    "actionstream_clips_inferred_total",
    "actionstream_inference_seconds",
    "actionstream_batch_size",
    "actionstream_event_latency_seconds",
    "actionstream_events_total",
    "actionstream_mqtt_connected",
    "actionstream_mqtt_queued_messages",
    "actionstream_queue_depth",
]


def exercised() -> Metrics:
    m = Metrics()
    cam, model = {"camera": "dock1"}, {"model": "kinetics"}
    m.frames_decoded.labels(**cam).inc(10)
    m.frames_sampled.labels(**cam).inc(5)
    m.frames_dropped.labels(reason="stale_clip", **cam).inc()
    m.stream_up.labels(**cam).set(1)
    m.stream_reconnects.labels(**cam).inc()
    m.clips_inferred.labels(**model).inc(4)
    m.inference_seconds.labels(**model).observe(0.031)
    m.flow_seconds.labels(method="tvl1", **cam).observe(0.4)
    m.batch_size.labels(**model).observe(4)
    m.event_latency_seconds.labels(**cam).observe(0.084)
    m.events.labels(label="falling", type="start", **cam).inc()
    m.mqtt_connected.set(1)
    m.mqtt_queued_messages.set(0)
    m.queue_depth.labels(stage="inference:kinetics").set(0)
    m.model_up.labels(**model).set(1)
    m.inference_failures.labels(**model).inc(0)
    m.mqtt_dropped_messages.labels(reason="queue_full").inc(0)
    m.snapshots_written.labels(**cam).inc()
    m.clips_written.labels(**cam).inc()
    m.evidence_bytes.set(1024)
    m.evidence_dropped.labels(kind="clip", reason="max_gb").inc(0)
    m.webhook_deliveries.labels(webhook="alerts").inc()
    m.webhook_failures.labels(webhook="alerts", reason="gave_up").inc(0)
    m.http_requests.labels(path="/metrics", status="200").inc()
    return m


def test_exercised_covers_every_metric():
    """Every metric the agent defines has a sample here (so the checks below and the alerts' see all of them)."""
    empty = [f.name for f in exercised().registry.collect() if not f.samples]
    assert not empty, f"metrics without a sample in exercised(): {empty}"


def promtool_check(exposition: bytes) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make deps` installs Debian's prometheus package"
    return subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True)


def test_every_design_metric_is_exposed_and_promtool_accepts_it():
    exposition = generate_latest(exercised().registry)
    text = exposition.decode()
    for name in DESIGN_METRICS:
        assert f"\n{name}" in text or text.startswith(name), f"{name} missing"
    result = promtool_check(exposition)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_latency_buckets_cover_5ms_to_5s():
    text = generate_latest(exercised().registry).decode()
    assert 'actionstream_event_latency_seconds_bucket{camera="dock1",le="0.005"}' in text
    assert 'actionstream_event_latency_seconds_bucket{camera="dock1",le="5.0"}' in text


def test_promtool_rejects_a_broken_exposition():
    # proves the check above can fail
    assert promtool_check(b'# TYPE x counter\nx{a="1" 3\n').returncode != 0
