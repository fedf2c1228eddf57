"""Item 3: the broker goes away under a running agent process; events are queued, delivered in order, none lost."""

from __future__ import annotations

import json

import pytest

from agent.live.sinks import INFLIGHT_WINDOW
from tests.conftest import TINY_LABELS
from tests.mosquitto import Message, Mosquitto, Subscriber
from tests.reliability.agentproc import EVENTS, AgentProcess, file_camera, total
from tests.rtsp_server import free_port

pytestmark = pytest.mark.timeout(180)
P = "actionstream"
CAMERAS = ["dock1", "dock2"]
RESTARTS = 5


def delivery(messages: list[Message]) -> dict:
    """Per camera: events deduplicated by id (QoS 1 may repeat), whether none is missing, order, duplicates."""
    out = {}
    for camera in CAMERAS:
        seqs = [json.loads(m.payload)["seq"] for m in messages if m.topic == f"{P}/{camera}/events"]
        first = list(dict.fromkeys(seqs))  # first arrivals, in arrival order
        out[camera] = {
            "events": len(first),
            "complete": sorted(first) == list(range(1, len(first) + 1)),
            "in_order": first == sorted(first),
            "duplicates": len(seqs) - len(first),
        }
    return out


def ended(messages: list[Message]) -> bool:
    available = [m.payload for m in messages if m.topic == f"{P}/available"]
    return bool(available) and available[-1] == "offline"


def events_seen(recorder: Subscriber) -> int:
    return sum(m.topic.endswith("/events") for m in recorder.snapshot())


def agent_config(stream_file, url: str, **mqtt) -> dict:
    return {
        "cameras": [file_camera(name, stream_file) for name in CAMERAS],
        "models": {"tiny": {"path": "MODEL"}},
        "mqtt": {"url": url, "stats_interval_s": 60, **mqtt},
        "events": EVENTS,
    }


@pytest.fixture
def config(stream_file, tiny_model):
    def make(url: str, **mqtt) -> dict:
        c = agent_config(stream_file, url, **mqtt)
        c["models"]["tiny"]["path"] = str(tiny_model)
        return c

    return make


def test_broker_restarted_5_times_while_events_flow(tmp_path, config, record):
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    recorder = Subscriber(broker, f"{P}/#", client_id="recorder", persistent=True).start()
    queued, reconnected = [], 0
    try:
        with AgentProcess(tmp_path / "agent", config(broker.url)) as agent:
            connected = lambda: agent.value("actionstream_mqtt_connected") == 1  # noqa: E731
            agent.wait_for(lambda: events_seen(recorder) >= 20, 60, "events on the broker")
            for _ in range(RESTARTS):
                broker.stop()
                agent.wait_for(lambda: not connected(), 15, "the agent to notice the broker is gone")
                seen = total(agent, "actionstream_events_total")
                agent.wait_for(lambda s=seen: total(agent, "actionstream_events_total") >= s + 10, 15, "new events")
                queued.append(agent.value("actionstream_mqtt_queued_messages"))
                broker.start()
                agent.wait_for(connected, 40, "the agent to reconnect")
                reconnected += 1
                before = events_seen(recorder)
                agent.wait_for(lambda b=before: events_seen(recorder) > b + 10, 20, "events delivered again")
            alive = agent.alive()
            code = agent.stop()
        messages = recorder.wait_for(ended, timeout=20)
    finally:
        recorder.stop()
        broker.stop()
    result = delivery(messages)
    complete = all(r["complete"] for r in result.values())
    in_order = all(r["in_order"] for r in result.values())
    allowance = RESTARTS * INFLIGHT_WINDOW
    duplicates = sum(r["duplicates"] for r in result.values())
    record.row(
        3,
        f"mosquitto stopped and restarted {RESTARTS}x while 2 cameras publish events",
        "every event delivered (no seq missing per camera), in order after deduplicating by id, duplicates only "
        f"within QoS 1's allowance (≤ {INFLIGHT_WINDOW} in flight per reconnect), process alive",
        f"reconnected {reconnected}/{RESTARTS}; events queued during {sum(q > 0 for q in queued)}/{RESTARTS} outages; "
        f"none missing: {complete}; in order: {in_order}; duplicates within allowance: {duplicates <= allowance}; "
        f"alive: {alive}, exit {code}",
    )
    record.measure(
        "3. broker restarts: events delivered / duplicates",
        f"{sum(r['events'] for r in result.values())} / {duplicates}",
    )
    assert reconnected == RESTARTS and all(q > 0 for q in queued)
    assert complete and in_order and duplicates <= allowance, result
    assert min(r["events"] for r in result.values()) >= 20
    assert alive and code == 0


def test_broker_down_at_start_up(tmp_path, config, record):
    broker = Mosquitto(tmp_path / "broker")
    broker.start()  # the recorder's persistent session, then the broker goes away before the agent starts
    recorder = Subscriber(broker, f"{P}/#", client_id="recorder", persistent=True).start()
    broker.stop()
    try:
        with AgentProcess(tmp_path / "agent", config(broker.url)) as agent:
            agent.wait_for(lambda: agent.value("actionstream_mqtt_queued_messages") >= 20, 60, "queued events")
            served_metrics = bool(agent.metrics())
            broker.start()
            agent.wait_for(lambda: agent.value("actionstream_mqtt_connected") == 1, 40, "connected")
            agent.wait_for(lambda: events_seen(recorder) >= 20, 20, "the queued events delivered")
            unreachable = [line for line in agent.stderr if "unreachable" in line]
            code = agent.stop()
        messages = recorder.wait_for(ended, timeout=20)
    finally:
        recorder.stop()
        broker.stop()
    result = delivery(messages)
    complete = all(r["complete"] and r["in_order"] for r in result.values())
    record.row(
        3,
        "broker down when the agent starts, started later",
        "agent starts and serves, queues events, delivers all of them in order once the broker is up; the outage "
        "is logged once",
        f"started and served /metrics while down: {served_metrics}; all queued events delivered in order from seq "
        f"1: {complete}; 'unreachable' log lines: {len(unreachable)}; exit {code}",
    )
    assert served_metrics and complete and len(unreachable) == 1 and code == 0, (result, unreachable)


def test_queue_overflow_is_counted_logged_and_survived(tmp_path, config, record):
    """queue_max bounds the events and stats; the retained state waits besides: one status and one ON/OFF per label
    and camera."""
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    state = len(CAMERAS) * (1 + len(TINY_LABELS))
    with AgentProcess(tmp_path / "agent", config(url, queue_max=25)) as agent:
        dropped = lambda: agent.value("actionstream_mqtt_dropped_messages_total", reason="queue_full")  # noqa: E731
        agent.wait_for(lambda: dropped() >= 10, 60, "dropped messages")
        queued = agent.value("actionstream_mqtt_queued_messages") - state
        drops = dropped()
        seen = total(agent, "actionstream_events_total")
        agent.wait_for(lambda: total(agent, "actionstream_events_total") > seen + 20, 20, "events still produced")
        alive = agent.alive()
        code = agent.stop()
    full = [line for line in agent.stderr if "queue full" in line]
    record.row(
        3,
        "queue overflow: broker unreachable, queue_max 25",
        "oldest messages dropped, counted (mqtt_dropped_messages_total) and logged (rate-limited), queue stays at "
        "the bound, process alive",
        f"queue held at {int(queued)}; drops counted: {drops > 0}; logged naming queue_max: "
        f"{bool(full) and all('queue_max=25' in line for line in full)}; alive: {alive}, exit {code}",
    )
    assert queued == 25 and drops > 0 and full and all("queue_max=25" in line for line in full)
    assert len(full) <= 2  # once per 10 s
    assert alive and code == 0
