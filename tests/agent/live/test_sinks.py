"""MqttSink and StdoutSink against a real mosquitto: topics, retained state, Last Will, outages, overflow, TLS."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client import generate_latest

from agent.config import MqttConfig
from agent.live import sinks
from agent.live.events import Event
from agent.live.sinks import MqttSink, StdoutSink
from agent.metrics import Metrics
from tests.conftest import ROOT
from tests.mosquitto import Message, Mosquitto, Subscriber
from tests.tcpproxy import StallProxy

P = "actionstream"
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
PASSWORD = "s3cr3t-Pa55!word"

pytestmark = pytest.mark.timeout(90)


def _event(seq: int, *, camera: str = "dock1", label: str = "falling", age_s: float = 0.0) -> Event:
    now = time.time()
    return Event(
        id=f"{camera}-{seq:06d}",
        action_id=f"{camera}-000000",
        seq=seq,
        type="start" if seq == 0 else "update",
        camera=camera,
        label=label,
        score=0.91,
        top_score=0.97,
        start_time=now - 2,
        end_time=None,
        clip_start=now - age_s - 2,
        clip_end=now - age_s,
        model="slowfast_r50_4x16",
        received_at=now - age_s,
        inference_ms=31.5,
    )


def _ids(messages: list[Message], camera: str = "dock1") -> list[str]:
    """Event ids in order of first arrival (QoS 1 may deliver duplicates)."""
    seen: list[str] = []
    for m in messages:
        if m.topic == f"{P}/{camera}/events":
            event_id = json.loads(m.payload)["id"]
            if event_id not in seen:
                seen.append(event_id)
    return seen


def _ended(messages: list[Message]) -> bool:
    """The sink's clean shutdown publishes ``offline`` after everything else it had queued."""
    available = [m.payload for m in messages if m.topic == f"{P}/available"]
    return bool(available) and available[-1] == "offline"


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


def _recorder(broker: Mosquitto, **kw) -> Subscriber:
    """A persistent-session subscriber to ``{P}/#``: on a persistent broker it misses nothing across restarts."""
    return Subscriber(broker, f"{P}/#", client_id="recorder", persistent=True, **kw)


@pytest.fixture
def broker(tmp_path):
    with Mosquitto(tmp_path / "broker") as b:
        yield b


def test_available_retained_topics_and_event_schema(broker):
    config = MqttConfig(url=broker.url, homeassistant_discovery=True)
    metrics = Metrics()
    live = Subscriber(broker, [f"{P}/#", "homeassistant/#"]).start()

    async def main() -> None:
        async with MqttSink(config, metrics) as sink:
            await _until(lambda: metrics.value("actionstream_mqtt_connected") == 1)
            sink.announce("dock1", ["falling", "air drumming"])
            sink.publish_status("dock1", True)
            sink.publish_state("dock1", "falling", True)
            for seq in range(3):
                sink.publish_event(_event(seq, age_s=0.2))
            sink.publish_state("dock1", "falling", False)
            sink.publish_stats({"cameras": {"dock1": {"fps": 25.0}}})
            await _until(lambda: sink.queued == 0)
            # A subscriber arriving now sees exactly the retained topics.
            late = Subscriber(broker, [f"{P}/#", "homeassistant/#"]).start()
            retained = await late.until(lambda m: len(m) >= 5, timeout=5)
            await asyncio.sleep(0.3)
            retained = {m.topic: m.payload for m in late.snapshot()}
            assert all(m.retain for m in late.snapshot())
            late.stop()
            assert retained[f"{P}/available"] == "online"
            assert retained[f"{P}/dock1/status"] == "online"
            assert retained[f"{P}/dock1/falling"] == "OFF"
            assert f"{P}/dock1/events" not in retained and f"{P}/stats" not in retained
            discovery = json.loads(retained["homeassistant/binary_sensor/actionstream_dock1_air_drumming/config"])
            assert discovery["state_topic"] == f"{P}/dock1/air drumming"
            assert discovery["unique_id"] == "actionstream_dock1_air_drumming"
            assert (discovery["payload_on"], discovery["payload_off"]) == ("ON", "OFF")
            assert discovery["availability_topic"] == f"{P}/available"
            assert discovery["device"]["identifiers"]
        assert metrics.value("actionstream_mqtt_connected") == 0

    asyncio.run(main())
    messages = live.wait_for(_ended, timeout=5)
    live.stop()

    events = [json.loads(m.payload) for m in messages if m.topic == f"{P}/dock1/events"]
    assert [e["seq"] for e in events] == [0, 1, 2]
    for e in events:
        assert set(e) == EVENT_KEYS and e["v"] == 1 and e["camera"] == "dock1" and e["label"] == "falling"
        assert set(e["clip"]) == {"start", "end"} and set(e["latency_ms"]) == {"capture_to_publish", "inference"}
        assert 200 <= e["latency_ms"]["capture_to_publish"] < 2000 and e["latency_ms"]["inference"] == 31.5
    assert [m.payload for m in messages if m.topic == f"{P}/dock1/falling"] == ["ON", "OFF"]
    assert json.loads(next(m.payload for m in messages if m.topic == f"{P}/stats")) == {
        "cameras": {"dock1": {"fps": 25.0}}
    }
    assert [m.payload for m in messages if m.topic == f"{P}/available"][-1] == "offline"
    assert metrics.value("actionstream_events_total", camera="dock1", label="falling", type="update") == 2
    assert metrics.value("actionstream_event_latency_seconds_count", camera="dock1") == 3
    assert metrics.value("actionstream_event_latency_seconds_sum", camera="dock1") >= 0.6
    # After a clean shutdown the retained availability is `offline`.
    with Subscriber(broker, f"{P}/available") as after:
        assert after.wait_for(lambda m: len(m) == 1, 5) == [Message(f"{P}/available", "offline", True)]


def test_publish_from_other_threads(broker):
    metrics = Metrics()
    recorder = Subscriber(broker, f"{P}/+/events").start()

    def worker(sink: MqttSink, camera: str) -> None:
        for seq in range(50):
            sink.publish_event(_event(seq, camera=camera))

    async def main() -> None:
        async with MqttSink(MqttConfig(url=broker.url), metrics) as sink:
            await _until(lambda: sink.connected)
            cameras = [f"cam{i}" for i in range(4)]
            await asyncio.gather(*(asyncio.to_thread(worker, sink, camera) for camera in cameras))
            await _until(lambda: sink.queued == 0)

    asyncio.run(main())
    messages = recorder.wait_for(lambda m: len({json.loads(x.payload)["id"] for x in m}) >= 200, 10)
    recorder.stop()
    for i in range(4):
        assert _ids(messages, f"cam{i}") == [f"cam{i}-{seq:06d}" for seq in range(50)]


CHILD = """
import asyncio, sys
from agent.config import MqttConfig
from agent.metrics import Metrics
from agent.live.sinks import MqttSink

async def main():
    async with MqttSink(MqttConfig(url=sys.argv[1], keepalive_s=5), Metrics()):
        await asyncio.sleep(60)

asyncio.run(main())
"""


def test_last_will_when_the_agent_is_killed(broker):
    with Subscriber(broker, f"{P}/available") as sub:
        child = subprocess.Popen([sys.executable, "-c", CHILD, broker.url], cwd=ROOT)
        try:
            sub.wait_for(lambda m: [x.payload for x in m] == ["online"], timeout=15)
            child.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            sub.wait_for(lambda m: [x.payload for x in m] == ["online", "offline"], timeout=1.5 * 5 + 2)
            assert time.monotonic() - killed <= 1.5 * 5 + 1
        finally:
            child.kill()
            child.wait()
    with Subscriber(broker, f"{P}/available") as late:
        assert late.wait_for(lambda m: len(m) == 1, 5) == [Message(f"{P}/available", "offline", True)]


def test_no_event_lost_across_a_broker_restart(broker, caplog):
    caplog.set_level(logging.INFO, logger="agent.live.sinks")
    metrics = Metrics()
    recorder = _recorder(broker).start()
    connected: list[float] = []

    async def produce(sink: MqttSink, seqs: range, every_s: float) -> None:
        for seq in seqs:
            sink.publish_event(_event(seq))
            connected.append(metrics.value("actionstream_mqtt_connected"))
            await asyncio.sleep(every_s)

    async def main() -> None:
        async with MqttSink(MqttConfig(url=broker.url), metrics) as sink:
            await _until(lambda: sink.connected)
            await produce(sink, range(5), 0.02)
            await _until(lambda: sink.queued == 0)
            broker.stop()
            await _until(lambda: metrics.value("actionstream_mqtt_connected") == 0, 5)
            await produce(sink, range(5, 35), 0.3)  # 30 events over 9 s, the broker away
            assert sink.queued == 30 and metrics.value("actionstream_mqtt_queued_messages") == 30
            broker.start()
            await _until(lambda: sink.connected, 35)  # paho's backoff: 1, 2, 4, 8 s
            await produce(sink, range(35, 40), 0.02)
        assert sink.dropped == 0

    asyncio.run(main())
    messages = recorder.wait_for(_ended, timeout=10)
    recorder.stop()
    assert _ids(messages) == [f"dock1-{seq:06d}" for seq in range(40)]
    assert 0.0 in connected and connected[-1] == 1.0
    assert "lost the connection" in caplog.text


def test_broker_down_at_start(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="agent.live.sinks")
    broker = Mosquitto(tmp_path / "broker")
    broker.start()  # create the recorder's persistent session, then take the broker away
    recorder = _recorder(broker).start()
    broker.stop()
    metrics = Metrics()

    async def main() -> None:
        started = time.monotonic()
        async with MqttSink(MqttConfig(url=broker.url), metrics) as sink:
            assert time.monotonic() - started < 0.5
            for seq in range(5):
                sink.publish_event(_event(seq))
            await asyncio.sleep(0.2)
            assert not sink.connected and sink.queued == 5
            broker.start()
            await _until(lambda: sink.connected, 20)

    try:
        asyncio.run(main())
        messages = recorder.wait_for(_ended, timeout=10)
        assert _ids(messages) == [f"dock1-{seq:06d}" for seq in range(5)]
        assert [m.payload for m in messages if m.topic == f"{P}/available"] == ["online", "offline"]
        unreachable = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        assert unreachable == [f"MQTT broker {broker.url} is unreachable (connection refused); retrying"]
    finally:
        recorder.stop()
        broker.stop()


def test_queue_overflow_drops_the_oldest(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="agent.live.sinks")
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    recorder = _recorder(broker).start()
    broker.stop()
    metrics = Metrics()

    async def main() -> None:
        async with MqttSink(MqttConfig(url=broker.url, queue_max=5), metrics) as sink:
            for seq in range(20):
                sink.publish_event(_event(seq))
            assert sink.dropped == 15 and sink.queued == 5
            assert metrics.value("actionstream_mqtt_queued_messages") == 5
            broker.start()
            await _until(lambda: sink.connected, 20)
            await _until(lambda: sink.queued == 0)

    try:
        asyncio.run(main())
        messages = recorder.wait_for(_ended, timeout=10)
        assert _ids(messages) == [f"dock1-{seq:06d}" for seq in range(15, 20)]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("queue full" in w and "queue_max=5" in w for w in warnings)
        assert sum("queue full" in w for w in warnings) == 1  # rate-limited
        assert metrics.value("actionstream_events_total", camera="dock1", label="falling", type="update") == 19
    finally:
        recorder.stop()
        broker.stop()


@pytest.fixture
def tls_broker(tmp_path):
    with Mosquitto(tmp_path / "broker", tls=True, users={"agent": PASSWORD, "reader": "reader-pw"}) as b:
        yield b


def test_tls_with_password(tls_broker, tmp_path, monkeypatch):
    monkeypatch.setenv("MQTT_TEST_PASSWORD", PASSWORD)
    password_file = tmp_path / "mqtt-password"
    password_file.write_text(PASSWORD + "\n")
    metrics = Metrics()
    config = MqttConfig(url=tls_broker.url, ca_file=tls_broker.ca_file, username="agent", password_file=password_file)
    with Subscriber(tls_broker, f"{P}/#", username="reader", password="reader-pw") as sub:

        async def main() -> None:
            async with MqttSink(config, metrics) as sink:
                sink.publish_event(_event(0))
                await _until(lambda: sink.connected, 10)

        asyncio.run(main())
        messages = sub.wait_for(_ended, timeout=10)
    assert _ids(messages) == ["dock1-000000"]


def test_tls_wrong_password_is_logged_clearly_and_retried(tls_broker, caplog):
    caplog.set_level(logging.DEBUG)
    metrics = Metrics()
    wrong = "Wr0ng-" + PASSWORD
    config = MqttConfig(url=tls_broker.url, ca_file=tls_broker.ca_file, username="agent", password=wrong)

    async def main() -> None:
        async with MqttSink(config, metrics) as sink:
            sink.publish_event(_event(0))
            await _until(lambda: "refused the connection" in caplog.text, 10)
            refused = tls_broker.log().count("(0, 135)")  # MQTT 5 CONNACK "not authorized"
            await _until(lambda: tls_broker.log().count("(0, 135)") > refused, 5)  # it retries (after 1-2 s)
            assert not sink.connected and metrics.value("actionstream_mqtt_connected") == 0
            assert sink.queued == 1

    asyncio.run(main())
    refusals = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
    assert refusals == [f"MQTT broker {tls_broker.url} refused the connection: not authorized; retrying"]
    everything = caplog.text + "".join(str(r.args) for r in caplog.records) + generate_latest(metrics.registry).decode()
    assert wrong not in everything and PASSWORD not in everything


def test_tls_unknown_ca_is_logged(tls_broker, tmp_path, caplog):
    from tests.mosquitto import make_ca

    caplog.set_level(logging.WARNING, logger="agent.live.sinks")
    other_ca, _ = make_ca(tmp_path, "other")
    config = MqttConfig(url=tls_broker.url, ca_file=other_ca, username="agent", password=PASSWORD)

    async def main() -> None:
        async with MqttSink(config, Metrics()) as sink:
            await _until(lambda: "TLS handshake" in caplog.text, 10)
            assert not sink.connected

    asyncio.run(main())
    assert "certificate verify failed" in caplog.text and PASSWORD not in caplog.text


def test_stdout_sink_prints_json_lines(capsys):
    metrics = Metrics()

    async def main() -> None:
        async with StdoutSink(metrics) as sink:
            sink.publish_status("dock1", True)
            sink.publish_state("dock1", "falling", True)
            for seq in range(3):
                sink.publish_event(_event(seq, age_s=0.1))
            sink.publish_stats({"x": 1})
            sink.announce("dock1", ["falling"])

    asyncio.run(main())
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for seq, line in enumerate(lines):
        event = json.loads(line)
        assert set(event) == EVENT_KEYS and event["seq"] == seq and event["latency_ms"]["capture_to_publish"] >= 100
    assert metrics.value("actionstream_event_latency_seconds_count", camera="dock1") == 3
    assert metrics.value("actionstream_events_total", camera="dock1", label="falling", type="start") == 1


# --- deployment failure paths (docs/RELIABILITY.md item 8 has the agent-process versions) ---------------------------


def test_retained_state_survives_queue_pressure(tmp_path):
    """The broker is away, queue_max 5: events are dropped oldest first, but the newest value of every retained topic
    is delivered, once (a newer value replaced the older one that waited), in publication order."""
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    recorder = _recorder(broker).start()
    broker.stop()
    metrics = Metrics()

    async def main() -> None:
        async with MqttSink(MqttConfig(url=broker.url, queue_max=5), metrics) as sink:
            sink.publish_status("dock1", False)
            sink.publish_state("dock1", "falling", False)
            sink.publish_state("dock1", "falling", True)
            for seq in range(20):
                sink.publish_event(_event(seq))
                sink.publish_stats({"seq": seq})
            sink.publish_state("dock1", "falling", False)
            sink.publish_status("dock1", True)
            sink.publish_state("dock1", "air drumming", False)
            assert sink.dropped == 35 and sink.queued == 5 + 3
            broker.start()
            await _until(lambda: sink.connected, 20)
            await _until(lambda: sink.queued == 0)

    try:
        asyncio.run(main())
        messages = recorder.wait_for(_ended, timeout=10)
    finally:
        recorder.stop()
        broker.stop()
    published = [(m.topic.removeprefix(f"{P}/"), m.payload) for m in messages if not m.topic.endswith("/available")]
    published = [(t, json.loads(x)["id"] if t.endswith("events") else x) for t, x in published]
    assert published == [
        ("stats", '{"seq": 17}'),
        ("dock1/events", "dock1-000018"),
        ("stats", '{"seq": 18}'),
        ("dock1/events", "dock1-000019"),
        ("stats", '{"seq": 19}'),
        ("dock1/falling", "OFF"),
        ("dock1/status", "online"),
        ("dock1/air drumming", "OFF"),
    ]
    assert metrics.value("actionstream_mqtt_dropped_messages_total", reason="queue_full") == 35


def test_offline_stays_retained_after_a_shutdown_with_a_backlog(broker, monkeypatch):
    """The broker's acknowledgements stop coming (the connection stays open) while events are queued; the shutdown
    cannot deliver them nor `offline`, so it disconnects with the Will: `offline` is what stays retained."""
    monkeypatch.setattr(sinks, "FLUSH_TIMEOUT_S", 1.0)

    async def main() -> None:
        with StallProxy(broker.port) as proxy:
            async with MqttSink(MqttConfig(url=proxy.url, client_id="agent"), Metrics()) as sink:
                await _until(lambda: sink.connected and sink.queued == 0)
                proxy.hold()
                for seq in range(50):
                    sink.publish_event(_event(seq))
                assert sink.queued == 50
            await asyncio.sleep(0.5)  # the broker reads the DISCONNECT

    asyncio.run(main())
    with Subscriber(broker, f"{P}/available") as after:
        assert after.wait_for(lambda m: len(m) == 1, 5) == [Message(f"{P}/available", "offline", True)]
    assert "Received DISCONNECT from agent" in broker.log()  # a DISCONNECT, not a lost connection


def test_qos2_exactly_once_across_broker_restarts_with_messages_in_flight(tmp_path):
    """QoS 2, a persistent broker: each round the broker stops with 20 events unacknowledged (it was paused), and
    restarts; the client re-sends them with their packet ids and the broker delivers each event exactly once."""
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    recorder = Subscriber(broker, f"{P}/#", client_id="recorder", persistent=True, qos=2).start()
    metrics = Metrics()

    async def main() -> None:
        async with MqttSink(MqttConfig(url=broker.url, qos=2, keepalive_s=60), metrics) as sink:
            await _until(lambda: sink.connected)
            for round_ in range(3):
                broker.pause()  # what follows is sent, and stays unacknowledged
                for seq in range(30 * round_, 30 * round_ + 30):
                    sink.publish_event(_event(seq))
                await asyncio.sleep(0.2)
                broker.stop()  # SIGTERM, then SIGCONT: the broker saves its sessions and exits
                await _until(lambda: not sink.connected, 10)
                broker.start()
                await _until(lambda: sink.connected and sink.queued == 0, 40)

    try:
        asyncio.run(main())
        messages = recorder.wait_for(_ended, timeout=10)
    finally:
        recorder.stop()
        broker.stop()
    ids = [json.loads(m.payload)["id"] for m in messages if m.topic == f"{P}/dock1/events"]
    assert ids == [f"dock1-{seq:06d}" for seq in range(90)]  # every one, once, in order
    assert metrics.value("actionstream_mqtt_dropped_messages_total", reason="refused") == 0


class _Gate(io.StringIO):
    """A stdout whose writes wait until :attr:`open` is set (a reader that has stopped reading)."""

    def __init__(self) -> None:
        super().__init__()
        self.open, self.entered = threading.Event(), threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        self.open.wait()
        return super().write(text)


def test_stdout_sink_never_blocks_the_caller_and_drops_the_oldest():
    metrics = Metrics()
    stream = _Gate()

    async def main() -> None:
        async with StdoutSink(metrics, stream, queue_max=5) as sink:
            sink.publish_event(_event(0))
            assert await asyncio.to_thread(stream.entered.wait, 5)  # the writer waits on line 0
            started = time.monotonic()
            for seq in range(1, 21):
                sink.publish_event(_event(seq))
            assert time.monotonic() - started < 1.0
            assert sink.dropped == 15 and metrics.value("actionstream_stdout_dropped_lines_total") == 15
            stream.open.set()

    asyncio.run(main())
    assert [json.loads(line)["seq"] for line in stream.getvalue().splitlines()] == [0, 16, 17, 18, 19, 20]


def test_stdout_sink_off_the_event_loop_with_a_full_pipe():
    """stdout is a real pipe that nobody reads for a while: publishing goes on, and once the reader comes back
    every line arrives (none dropped), also those still waiting at shutdown."""
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 4096)
    stream = open(write_fd, "w", buffering=1)  # noqa: SIM115 (closed below)
    received = bytearray()

    def read() -> None:
        while chunk := os.read(read_fd, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=read)
    back = threading.Lock()

    def reader_back() -> None:
        with back:
            if not reader.is_alive() and reader.ident is None:
                reader.start()

    watchdog = threading.Timer(5.0, reader_back)  # a sink that blocks its caller is unblocked after 5 s
    watchdog.start()
    metrics = Metrics()

    async def main() -> float:
        async with StdoutSink(metrics, stream) as sink:
            started = time.monotonic()
            for seq in range(500):  # ~200 kB: far more than the pipe holds
                sink.publish_event(_event(seq))
            took = time.monotonic() - started
            reader_back()
        return took

    try:
        took = asyncio.run(main())
    finally:
        watchdog.cancel()
        stream.close()
        reader.join(10)
        os.close(read_fd)
    assert took < 2.0, f"publishing 500 events took {took:.1f} s: the caller waited for stdout"
    assert [json.loads(line)["seq"] for line in received.decode().splitlines()] == list(range(500))
    assert metrics.value("actionstream_stdout_dropped_lines_total") == 0
