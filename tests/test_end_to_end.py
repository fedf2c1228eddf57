"""`actionstream run` as users run it: a real RTSP camera, a real broker, an exported model, /metrics, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import yaml

from tests.agent.test_metrics import DESIGN_METRICS, promtool_check
from tests.conftest import TINY_LABELS
from tests.mosquitto import Mosquitto, Subscriber
from tests.rtsp_server import RtspServer, free_port

PASSWORD = "Cam-Pa55word"
EVENT_KEYS = {
    "v",
    "id",
    "action_id",
    "type",
    "camera",
    "label",
    "score",
    "top_score",
    "start_time",
    "end_time",
    "clip",
    "model",
}
EVENT_KEYS |= {"latency_ms", "seq"}


def test_run_publishes_events_metrics_and_shuts_down_cleanly(tmp_path, tiny_model):
    camera = RtspServer()
    camera.start()
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker, "actionstream/#").start()
    metrics_port = free_port()
    config = {
        "cameras": [{"name": "door", "url": camera.url("admin", PASSWORD), "every_s": 0.5, "read_timeout_s": 3}],
        "models": {"tiny": {"path": str(tiny_model), "max_batch": 4}},
        "mqtt": {"url": broker.url, "stats_interval_s": 1},
        "metrics": {"host": "127.0.0.1", "port": metrics_port},
        "events": {"threshold": 0.1, "end_threshold": 0.05, "min_hits": 1},  # random weights: ~0.2 per label
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "-c", str(tmp_path / "config.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        messages = subscriber.wait_for(
            lambda ms: (
                sum(m.topic == "actionstream/door/events" for m in ms) >= len(TINY_LABELS)
                and any(m.topic == "actionstream/stats" for m in ms)
                and any(m.topic == "actionstream/door/still" and m.payload == "ON" for m in ms)  # after the events
            ),
            timeout=90,
        )
        events = [json.loads(m.payload) for m in messages if m.topic == "actionstream/door/events"]
        assert all(set(e) == EVENT_KEYS for e in events)
        starts = {e["label"] for e in events if e["type"] == "start"}
        assert starts == set(TINY_LABELS)
        assert all(e["camera"] == "door" and e["model"] == "tiny" and e["v"] == 1 for e in events)
        assert all(0 <= e["latency_ms"]["capture_to_publish"] < 5000 for e in events)
        assert subscriber.payloads("actionstream/available")[-1] == "online"
        assert subscriber.payloads("actionstream/door/status")[-1] == "online"
        assert subscriber.payloads("actionstream/door/still")[-1] == "ON"

        exposition = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
        text = exposition.decode()
        for name in DESIGN_METRICS:
            assert name in text, name
        count = [line for line in text.splitlines() if line.startswith("actionstream_event_latency_seconds_count")]
        assert count and float(count[0].split()[-1]) > 0
        assert promtool_check(exposition).returncode == 0
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = agent.communicate(timeout=30)
        finally:
            agent.kill()
            camera.kill()
    assert agent.returncode == 0, stderr[-3000:]
    final = subscriber.wait_for(lambda ms: ms[-1:] and ms[-1].payload == "offline", timeout=10)
    subscriber.stop()
    broker.stop()
    ended = {json.loads(m.payload)["label"] for m in final if m.topic.endswith("/events") and '"end"' in m.payload}
    assert ended == set(TINY_LABELS)  # clean shutdown ends every active action
    assert subscriber.payloads("actionstream/door/status")[-1] == "offline"
    assert subscriber.payloads("actionstream/available")[-1] == "offline"
    assert all(subscriber.payloads(f"actionstream/door/{label}")[-1] == "OFF" for label in TINY_LABELS)
    everything = stdout + stderr + text + "".join(m.payload for m in final)
    assert PASSWORD not in everything
