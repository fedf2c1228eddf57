"""Item 8: failure paths a real deployment hits, with the agent as a real process and a real mosquitto: a crash
that leaves retained state behind, a shutdown with a backlog, exactly-once delivery across broker restarts, a
reader of stdout that stalls, Home Assistant discovery at scale, and sharded replicas on one broker."""

from __future__ import annotations

import json
import time

import pytest

from agent.live.sinks import INFLIGHT_WINDOW
from agent.shard import assignment
from tests.conftest import TINY_LABELS
from tests.mosquitto import Message, Mosquitto, Subscriber
from tests.reliability.agentproc import EVENTS, AgentProcess, file_camera, total
from tests.rtsp_server import free_port
from tests.tcpproxy import StallProxy

pytestmark = pytest.mark.timeout(300)
P = "actionstream"
RESTARTS = 5


def retained(broker: Mosquitto, topics: str | list[str], expected: int, timeout: float = 20.0) -> dict[str, str]:
    """The retained messages a new subscriber is given: ``{topic: payload}`` (waits for ``expected`` of them)."""
    with Subscriber(broker, topics) as late:
        messages = late.wait_for(lambda ms: len(ms) >= expected, timeout)
        time.sleep(0.3)  # anything beyond `expected` has arrived too
        messages = late.snapshot()
    return {m.topic: m.payload for m in messages if m.retain}


def down_camera(name: str) -> dict:
    """A camera whose RTSP server is down: the agent retries it (every 30 s at most) and publishes its state."""
    return {"name": name, "url": f"rtsp://127.0.0.1:{free_port()}/x", "backoff_initial_s": 5, "backoff_max_s": 30}


# --- A: retained state tells the truth --------------------------------------------------------------------------


def test_retained_on_left_by_a_crash_is_set_off_at_start(tmp_path, stream_file, tiny_model, record):
    """Run 1 turns every label ON and is killed (SIGKILL: an OOM kill); run 2 sees nothing (threshold 0.99)."""
    states = [f"{P}/door/{label}" for label in TINY_LABELS]
    config = {
        "cameras": [file_camera("door", stream_file)],
        "models": {"tiny": {"path": str(tiny_model)}},
        "mqtt": {"url": "", "stats_interval_s": 60},
        "events": EVENTS,
    }
    with Mosquitto(tmp_path / "broker") as broker:
        config["mqtt"]["url"] = broker.url
        with Subscriber(broker, f"{P}/door/+") as live, AgentProcess(tmp_path / "run1", config) as run1:
            live.wait_for(lambda ms: {m.topic for m in ms if m.payload == "ON"} >= set(states), 60)
            run1.kill()
        after_crash = retained(broker, f"{P}/door/+", len(states))
        quiet = {**config, "events": {"threshold": 0.99, "end_threshold": 0.05, "min_hits": 1}}
        with AgentProcess(tmp_path / "run2", quiet) as run2:
            run2.wait_for(lambda: run2.value("actionstream_clips_inferred_total", model="tiny") >= 3, 60, "clips")
            after_restart = retained(broker, f"{P}/door/+", len(states))
            code = run2.stop()
    on_before = sum(after_crash.get(t) == "ON" for t in states)
    on_after = sum(after_restart.get(t) == "ON" for t in states)
    all_off = all(after_restart.get(t) == "OFF" for t in states)
    record.row(
        8,
        "agent SIGKILLed (crash, OOM kill) with every label ON, then started again with nothing happening",
        "the new run publishes OFF (retained) for every label it follows: no ON from the dead run stays",
        f"labels retained ON after the kill: {on_before} of {len(states)}; after the restart: {on_after} of "
        f"{len(states)}; all OFF: {all_off}; exit {code}",
    )
    assert on_before == len(states) and on_after == 0 and all_off and code == 0, after_restart


def test_shutdown_with_a_backlog_leaves_offline(tmp_path, stream_file, tiny_model, record):
    """The broker's acknowledgements stop coming (the connection stays open: a proxy holds them) while two cameras
    publish; SIGTERM: the agent cannot deliver its backlog nor `offline` within 5 s, and disconnects with the Will."""
    config = {
        "cameras": [file_camera(name, stream_file) for name in ("dock1", "dock2")],
        "models": {"tiny": {"path": str(tiny_model)}},
        "mqtt": {"url": "", "stats_interval_s": 60, "client_id": "agent"},
        "events": EVENTS,
    }
    with Mosquitto(tmp_path / "broker") as broker, StallProxy(broker.port) as proxy:
        config["mqtt"]["url"] = proxy.url
        with Subscriber(broker, f"{P}/#") as live, AgentProcess(tmp_path / "agent", config) as agent:
            live.wait_for(lambda ms: sum(m.topic.endswith("/events") for m in ms) >= 10, 60)
            proxy.hold()
            agent.wait_for(lambda: agent.value("actionstream_mqtt_queued_messages") >= 40, 30, "a backlog")
            backlog = agent.value("actionstream_mqtt_queued_messages") >= 40
            code = agent.stop()
        time.sleep(0.5)
        available = retained(broker, f"{P}/available", 1)
        disconnected = "Received DISCONNECT from agent" in broker.log()
    record.row(
        8,
        "SIGTERM with a backlog: the broker's acknowledgements held back (connection open), 2 cameras publishing",
        "the agent disconnects with reason code 0x04 (Disconnect with Will Message): `{prefix}/available` stays "
        "`offline`, not `online`",
        f"backlog at SIGTERM: {backlog}; DISCONNECT sent: {disconnected}; retained availability afterwards: "
        f"{available.get(f'{P}/available')}; exit {code}",
    )
    assert backlog and disconnected and available == {f"{P}/available": "offline"} and code == 0


# --- B: no double delivery of our own making --------------------------------------------------------------------


def test_qos2_exactly_once_across_broker_restarts(tmp_path, stream_file, tiny_model, record):
    """mqtt.qos 2; mosquitto with persistence is stopped (SIGTERM saves its sessions) and started again 5 times while
    2 cameras publish, each time with messages in flight (it stopped answering for a moment first, SIGSTOP); a QoS 2
    subscriber with a persistent session records every event id."""
    cameras = ["dock1", "dock2"]
    config = {
        "cameras": [file_camera(name, stream_file) for name in cameras],
        "models": {"tiny": {"path": str(tiny_model)}},
        "mqtt": {"url": "", "stats_interval_s": 60, "qos": 2},
        "events": EVENTS,
    }
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    config["mqtt"]["url"] = broker.url
    recorder = Subscriber(broker, f"{P}/+/events", client_id="recorder", persistent=True, qos=2).start()
    events_seen = lambda: len(recorder.snapshot())  # noqa: E731
    reconnected = in_flight = 0
    try:
        with AgentProcess(tmp_path / "agent", config) as agent:
            connected = lambda: agent.value("actionstream_mqtt_connected") == 1  # noqa: E731
            queued = lambda: agent.value("actionstream_mqtt_queued_messages")  # noqa: E731
            agent.wait_for(lambda: events_seen() >= 20, 60, "events on the broker")
            for _ in range(RESTARTS):
                broker.pause()
                agent.wait_for(lambda: queued() > INFLIGHT_WINDOW, 20, "a full in-flight window")
                in_flight += 1
                broker.stop()  # SIGTERM (and SIGCONT): it saves its sessions and exits
                agent.wait_for(lambda: not connected(), 15, "the agent to notice the broker is gone")
                seen = total(agent, "actionstream_events_total")
                agent.wait_for(lambda s=seen: total(agent, "actionstream_events_total") >= s + 10, 15, "new events")
                broker.start()
                agent.wait_for(connected, 40, "the agent to reconnect")
                reconnected += 1
                before = events_seen()
                agent.wait_for(lambda b=before: events_seen() > b + 10, 20, "events delivered again")
            published = total(agent, "actionstream_events_total")
            alive = agent.alive()
            code = agent.stop()
        recorder.wait_for(lambda ms: len(ms) >= published, 20)
        time.sleep(1.0)  # anything still on its way (a duplicate) arrives too
        messages = recorder.snapshot()
    finally:
        recorder.stop()
        broker.stop()
    missing = twice = 0
    in_order = True
    for camera in cameras:
        seqs = [json.loads(m.payload)["seq"] for m in messages if m.topic == f"{P}/{camera}/events"]
        first = list(dict.fromkeys(seqs))
        missing += len(set(range(1, max(seqs) + 1)) - set(seqs))
        twice += len(seqs) - len(first)
        in_order = in_order and first == sorted(first)
    record.row(
        8,
        f"mqtt.qos 2: mosquitto (persistence on) stopped and restarted {RESTARTS}x while 2 cameras publish, each time "
        f"with {INFLIGHT_WINDOW} messages unacknowledged; a QoS 2 subscriber with a persistent session",
        "every event delivered exactly once: the client re-sends what was in flight with its packet ids in the "
        "persistent session (the broker deduplicates), the agent never publishes a message twice",
        f"stopped with a full in-flight window: {in_flight}/{RESTARTS}; reconnected {reconnected}/{RESTARTS}; "
        f"events missing: {missing}; delivered twice: {twice}; in order: "
        f"{in_order}; alive: {alive}, exit {code}",
    )
    record.measure("8. QoS 2 broker restarts: events delivered", str(len(messages)))
    assert in_flight == reconnected == RESTARTS and missing == 0 and twice == 0 and in_order and alive and code == 0


# --- C: nothing slow on the event loop ----------------------------------------------------------------------------


def test_stdout_reader_that_stalls(tmp_path, stream_file, tiny_model, record):
    """No MQTT: events go to stdout, a 4 KiB pipe that nobody reads for a while (`agent | slow-consumer`)."""
    cameras = ["dock1", "dock2"]
    config = {
        "cameras": [file_camera(name, stream_file) for name in cameras],
        "models": {"tiny": {"path": str(tiny_model)}},
        "events": EVENTS,
    }
    agent = AgentProcess(tmp_path / "agent", config, read_stdout=False, stdout_pipe_bytes=4096)
    with agent:
        events = lambda: total(agent, "actionstream_events_total")  # noqa: E731
        clips = lambda: agent.value("actionstream_clips_inferred_total", model="tiny")  # noqa: E731
        try:  # ~40 lines fill the pipe and the agent's buffer; 200 need the event loop to go on
            agent.wait_for(lambda: events() >= 200, 40, "events while stdout is not read")
            before = clips()
            agent.wait_for(lambda: clips() >= before + 10, 20, "inference while stdout is not read")
            went_on = True
        except TimeoutError:
            went_on = False
        agent.read_stdout()
        agent.wait_for(lambda: len(agent.stdout) >= 200, 30, "the lines once stdout is read")
        dropped = agent.value("actionstream_stdout_dropped_lines_total")
        code = agent.stop()
    lines = agent.events()
    complete = True
    for camera in cameras:
        mine = [e for e in lines if e["camera"] == camera]
        complete = complete and [e["seq"] for e in mine] == list(range(1, len(mine) + 1))
        started = {e["action_id"] for e in mine if e["type"] == "start"}
        complete = complete and started == {e["action_id"] for e in mine if e["type"] == "end"}
    record.row(
        8,
        "events to stdout, a pipe that nobody reads for a while (4 KiB), 2 cameras",
        "cameras and inference go on while stdout is not read (a thread writes the lines); once the reader is back "
        "every line arrives, the last ones (every action's end) at the clean shutdown",
        f"inference went on while stdout was not read: {went_on}; every line printed (seq contiguous per camera, "
        f"every started action ended): {complete}; lines dropped: {int(dropped)}; exit {code}",
    )
    assert went_on and complete and dropped == 0 and code == 0


# --- D: Home Assistant discovery fits the queue -------------------------------------------------------------------

WIDE_LABELS = [f"action {i:03d}" for i in range(400)]


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """The tiny SlowFast with 400 labels (Kinetics-400's count)."""
    from export import to_onnx

    work = tmp_path_factory.mktemp("wide-model")
    labels = work / "labels.txt"
    labels.write_text("\n".join(WIDE_LABELS) + "\n")
    out = work / "slowfast_wide.onnx"
    argv = ["--arch", "slowfast_r50_4x16", "--depth", "18", "--width", "8", "--size", "64"]
    assert to_onnx.main([*argv, "--labels", str(labels), "--out", str(out)]) == 0
    return out


def test_discovery_for_26_cameras_of_400_labels(tmp_path, wide_model, record):
    cameras = [f"cam{i:02d}" for i in range(26)]
    expected = len(cameras) * len(WIDE_LABELS)
    config = {
        "cameras": [down_camera(name) for name in cameras],
        "models": {"wide": {"path": str(wide_model)}},
        "mqtt": {"url": "", "stats_interval_s": 60, "homeassistant_discovery": True},
    }
    # The subscriber may fall behind the burst: the broker keeps whatever it has to send it.
    with Mosquitto(tmp_path / "broker", settings=["max_queued_messages 0"]) as broker:
        config["mqtt"]["url"] = broker.url
        with Subscriber(broker, [f"{P}/#", "homeassistant/#"]) as live, AgentProcess(tmp_path / "agent", config) as a:

            def counts(messages: list[Message]) -> tuple[int, int]:
                configs = {m.topic for m in messages if m.topic.startswith("homeassistant/")}
                off = {m.topic for m in messages if m.payload == "OFF" and not m.topic.endswith("/status")}
                return len(configs), len(off)

            try:
                live.wait_for(lambda ms: counts(ms) == (expected, expected), 180)
            except TimeoutError:
                pass
            configs, off = counts(live.snapshot())
            dropped = total(a, "actionstream_mqtt_dropped_messages_total")
            sample = json.loads(live.payloads("homeassistant/binary_sensor/actionstream_cam07_action_123/config")[0])
            code = a.stop()
    record.row(
        8,
        f"Home Assistant discovery for {len(cameras)} cameras × {len(WIDE_LABELS)} labels (mqtt.queue_max 10000)",
        "every discovery config and every label's OFF state arrives; retained state does not count against "
        "queue_max, nothing is dropped",
        f"discovery configs: {configs}/{expected}; OFF states: {off}/{expected}; mqtt_dropped_messages_total: "
        f"{int(dropped)}; exit {code}",
    )
    assert configs == expected and off == expected and dropped == 0 and code == 0
    assert sample["availability_topic"] == f"{P}/available" and sample["state_topic"] == f"{P}/cam07/action 123"


# --- E: shards don't step on each other ---------------------------------------------------------------------------


def test_two_shards_on_one_broker_with_one_client_id(tmp_path, tiny_model, record):
    """`--shard 0/2` and `--shard 1/2` with the same configured mqtt.client_id; then shard 1 is SIGKILLed."""
    names = ["door", "yard", "dock1", "dock2", "lobby", "gate"]
    plan = assignment(names, 2)
    assert plan[0] and plan[1]
    config = {
        "cameras": [down_camera(name) for name in names],
        "models": {"tiny": {"path": str(tiny_model)}},
        "mqtt": {"url": "", "stats_interval_s": 60, "client_id": "site", "homeassistant_discovery": True},
    }
    with Mosquitto(tmp_path / "broker") as broker:
        config["mqtt"]["url"] = broker.url
        with (
            Subscriber(broker, [f"{P}/available/#", "homeassistant/#"]) as live,
            AgentProcess(tmp_path / "shard0", config, args=["--shard", "0/2"]) as shard0,
            AgentProcess(tmp_path / "shard1", config, args=["--shard", "1/2"]) as shard1,
        ):
            for shard in (shard0, shard1):
                shard.wait_for(lambda s=shard: s.value("actionstream_mqtt_connected") == 1, 30, "connected")
            time.sleep(5.0)  # replicas that share a client id take each other's connection within seconds
            both_up = all(s.value("actionstream_mqtt_connected") == 1 for s in (shard0, shard1))
            log = broker.log()
            connections = [log.count(f" as site-shard-{i} ") for i in range(2)]
            taken_over = log.count("already connected, closing old connection")
            topics = {}
            for i, cams in plan.items():
                discovery = json.loads(live.payloads(f"homeassistant/binary_sensor/{P}_{cams[0]}_still/config")[0])
                topics[i] = discovery["availability_topic"]
            own_topics = topics == {i: f"{P}/available/shard-{i}" for i in range(2)}
            shard1.kill()
            live.wait_for(lambda ms: live.payloads(f"{P}/available/shard-1")[-1:] == ["offline"], 15)
            availability = retained(broker, f"{P}/available/+", 2)
            code = shard0.stop()
    record.row(
        8,
        "two replicas (--shard 0/2, --shard 1/2) with one configured mqtt.client_id on one broker; shard 1 SIGKILLed",
        "each replica has its own client id (`-shard-{i}`) and availability topic (`{prefix}/available/shard-{i}`, "
        "named by its discovery configs): both stay connected; the kill marks only its own entities unavailable",
        f"both connected: {both_up}; connections per shard: {connections[0]} and {connections[1]}; taken over: "
        f"{taken_over}; discovery names its shard's availability: {own_topics}; after the kill: shard-0 "
        f"{availability.get(f'{P}/available/shard-0')}, shard-1 {availability.get(f'{P}/available/shard-1')}; "
        f"shard 0 exit {code}",
    )
    assert both_up and connections == [1, 1] and taken_over == 0 and own_topics, (connections, taken_over, topics)
    assert availability == {f"{P}/available/shard-0": "online", f"{P}/available/shard-1": "offline"}
    assert code == 0
