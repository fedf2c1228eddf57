"""Sinks: where events, camera state, availability and stats go — an MQTT broker, or stdout.

Both sinks are async context managers with the same non-blocking, thread-safe methods (:class:`Sink`).

:class:`MqttSink` publishes the topics of docs/contracts.md through paho-mqtt, whose network loop runs in its own
thread. Delivery works like this:

* Every message waits in our own queue until it is handed to paho, in publication order, while connected and at
  most :data:`INFLIGHT_WINDOW` QoS 1/2 messages are unacknowledged. QoS 0 messages are done once handed over.
* A QoS 1/2 message handed to paho is paho's until the broker acknowledges it (PUBACK/PUBCOMP): after a reconnect
  paho sends it again itself, with its packet id and DUP set, before anything newer; we never hand it over again.
  The session is persistent (clean start on the first connection only, a session expiry interval of
  :data:`SESSION_EXPIRY_S`), so a broker that keeps its sessions (across its own restarts too, with persistence)
  recognises a repeated QoS 2 packet id and delivers the message once. QoS 1 may deliver it twice (events carry an
  ``id``); nothing is lost silently.
* Retained messages (availability, status, ON/OFF state, discovery configs) are state: at most one value per topic
  waits (a newer one replaces the older one not yet handed over, and takes its own place in the order), so they are
  bounded by the configuration and never dropped. ``queue_max`` bounds the non-retained messages (events, stats)
  that wait: when it is reached the OLDEST of them is dropped, counted in :attr:`MqttSink.dropped` and
  ``actionstream_mqtt_dropped_messages_total{reason="queue_full"}``, and logged (at most every 10 s, with the count
  so far).
* The protocol is MQTT 5, so that the broker can say when it refuses a message (an ACL that forbids the topic,
  a quota): such a message is not retried (it would be refused again), it is counted as
  ``reason="refused"`` and logged once per topic and reason, naming both.
* ``{prefix}/available`` (``{prefix}/available/shard-{i}`` for replica ``i`` of several, whose client id also gets
  ``-shard-{i}``): Last Will ``offline``; ``online`` on every (re)connect; ``offline`` on shutdown. A shutdown that
  leaves messages undelivered or ``offline`` unacknowledged disconnects with reason code 0x04 (Disconnect with Will
  Message), so that the broker publishes ``offline`` itself.
* Start-up never waits for the broker: paho retries forever (1 s doubling to 30 s); each distinct connection
  problem is logged once (again after :data:`LOG_REPEAT_S`), never raised. The password never reaches a log line.

:class:`StdoutSink` writes one event JSON object per line to stdout and nothing else, so the output can be piped
into ``jq``; camera state, status and stats are logged at DEBUG level (on stderr) instead. A thread of its own
writes the lines, so a slow reader never stalls the event loop: at most ``queue_max`` lines wait, beyond that the
oldest is dropped (``actionstream_stdout_dropped_lines_total``); a clean shutdown writes every line that waits.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import re
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO
from urllib.parse import quote

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from agent.errors import ConfigError
from agent.live.events import Event
from agent.metrics import Metrics

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
FLUSH_TIMEOUT_S = 5.0  # shutdown waits this long for queued messages to be acknowledged (stdout: written)
INFLIGHT_WINDOW = 20  # QoS 1/2 messages handed to paho and not yet acknowledged
SESSION_EXPIRY_S = 3600  # the broker keeps our session this long after a lost connection (0 on shutdown)
STDOUT_QUEUE_MAX = 10000  # event lines waiting for stdout; beyond it the oldest are dropped
STDOUT_BATCH = 256  # lines written (and flushed) at a time
LOG_REPEAT_S = 300.0  # an unchanged connection problem is logged again after this long
DROP_RECENT_S = 30.0  # the sink is not ready (readiness probe) this long after it dropped a message


class Sink(Protocol):
    """What the pipeline publishes to (used as ``async with sink:``)."""

    def publish_event(self, event: Event) -> None: ...
    def publish_state(self, camera: str, label: str, on: bool) -> None: ...
    def publish_status(self, camera: str, online: bool) -> None: ...
    def publish_stats(self, stats: dict) -> None: ...
    def publish_snapshot(self, camera: str, label: str, jpeg: bytes) -> None: ...
    def announce(self, camera: str, labels: Iterable[str]) -> None: ...
    async def __aenter__(self) -> Sink: ...
    async def __aexit__(self, *exc: object) -> None: ...


@dataclass(eq=False)
class _Message:
    topic: str
    qos: int
    retain: bool
    payload: bytes | None = None  # None: an event whose JSON is built when it is handed to paho
    event: Event | None = None


_PACKET_ID_NOT_FOUND = 0x92  # a PUBCOMP's answer to our PUBREL when the broker lost our session (see _on_publish)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "_"


def _valid_topic(topic: str) -> bool:
    return bool(topic) and not any(c in topic for c in "+#\0") and len(topic.encode()) <= 65535


def _describe_connect_error(exc: BaseException | None) -> str:
    """Words for a failed connection attempt (paho passes no exception; we read the one being handled)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"failed the TLS handshake (certificate verify failed: {exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"failed the TLS handshake ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "is unreachable (connection refused)"
    if isinstance(exc, TimeoutError):
        return "is unreachable (timed out)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"is unreachable ({exc.strerror})"
    return f"is unreachable ({exc})" if exc else "is unreachable"


class MqttSink:
    """Publishes to an MQTT broker (see the module docstring for the delivery guarantee).

    ``async with MqttSink(config, metrics) as sink:`` returns at once, connected or not. ``shard``: ``(i, n)`` when
    this agent is replica ``i`` of ``n`` (agent/shard.py): with ``n > 1`` it has an availability topic and a client
    id of its own.
    """

    def __init__(self, config: MqttConfig, metrics: Metrics, *, shard: tuple[int, int] | None = None) -> None:
        self.config, self.metrics = config, metrics
        self._broker = config.broker
        self.prefix = config.prefix.strip("/")
        if not _valid_topic(self.prefix):
            raise ConfigError(f"mqtt.prefix: {config.prefix!r} is not a valid topic prefix (no +, #, not empty)")
        self.dropped = 0
        """Non-retained messages dropped because ``queue_max`` of them waited (the oldest go first)."""
        client_id = config.client_id or f"actionstream-{secrets.token_hex(4)}"
        if shard is not None and shard[1] > 1:  # replicas: one availability (and Last Will) and client id each
            self.available_topic = f"{self.prefix}/available/shard-{shard[0]}"
            self._client_id = f"{client_id}-shard-{shard[0]}"
        else:
            self.available_topic, self._client_id = f"{self.prefix}/available", client_id
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        # Not yet handed to paho, in publication order, by number. Of these, the non-retained ones (oldest first;
        # at most queue_max) and the retained ones (topic → the number of its newest value; one per topic).
        self._pending: collections.OrderedDict[int, _Message] = collections.OrderedDict()
        self._volatile: collections.deque[int] = collections.deque()
        self._latest: dict[str, int] = {}
        # Handed to paho and not yet acknowledged, by paho's mid: paho owns them (it re-sends them after reconnects).
        self._inflight: dict[int, _Message] = {}
        self._connected = False
        self._closing = self._closed = False
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._secrets: list[str] = []
        self._problems_logged: dict[str, float] = {}  # connection problem → when it was last logged
        self._recovery_due = False  # a problem was logged: say so when connected again
        self._connack_refused = False  # set by paho's thread when a CONNACK refuses us
        self._drop_logged_at = -LOG_REPEAT_S
        self._dropped_at = -DROP_RECENT_S

    # -- public API ---------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected to the broker (as last reported by paho's network thread)."""
        return self._connected

    @property
    def queued(self) -> int:
        """Messages not yet acknowledged (waiting, or handed to paho and awaiting the broker's ack)."""
        with self._lock:
            return len(self._pending) + len(self._inflight)

    def problem(self) -> str | None:
        """Why the sink is not delivering within its bound (the readiness probe), or None: the queue is full, or
        messages were dropped for it within the last :data:`DROP_RECENT_S`."""
        queued = self.queued
        if queued >= self.config.queue_max:
            return (
                f"MQTT queue full ({queued} of mqtt.queue_max {self.config.queue_max}; broker {self._broker.display})"
            )
        if self.dropped and time.monotonic() - self._dropped_at < DROP_RECENT_S:
            return f"MQTT dropped messages in the last {DROP_RECENT_S:.0f} s (queue full)"
        return None

    def publish_event(self, event: Event) -> None:
        """``{prefix}/{camera}/events``; its latency is measured when it is handed to paho, not now."""
        self.metrics.events.labels(event.camera, event.label, event.type).inc()
        self._enqueue(_Message(f"{self.prefix}/{event.camera}/events", self.config.qos, False, event=event))

    def publish_state(self, camera: str, label: str, on: bool) -> None:
        self._enqueue(_Message(f"{self.prefix}/{camera}/{label}", 1, True, b"ON" if on else b"OFF"))

    def publish_status(self, camera: str, online: bool) -> None:
        self._enqueue(_Message(f"{self.prefix}/{camera}/status", 1, True, b"online" if online else b"offline"))

    def publish_stats(self, stats: dict) -> None:
        self._enqueue(_Message(f"{self.prefix}/stats", 0, False, json.dumps(stats).encode()))

    def publish_snapshot(self, camera: str, label: str, jpeg: bytes) -> None:
        """``{prefix}/{camera}/{label}/snapshot``: the JPEG of the label's latest action, retained."""
        self._enqueue(_Message(f"{self.prefix}/{camera}/{label}/snapshot", 1, True, jpeg))

    def announce(self, camera: str, labels: Iterable[str]) -> None:
        """Home Assistant MQTT discovery: one retained binary_sensor config per label (when enabled)."""
        if not self.config.homeassistant_discovery:
            return
        device_id = _slug(f"{self.prefix}_{camera}")
        for label in labels:
            object_id = f"{device_id}_{_slug(label)}"
            config = {
                "name": label,
                "unique_id": object_id,
                "state_topic": f"{self.prefix}/{camera}/{label}",
                "payload_on": "ON",
                "payload_off": "OFF",
                "availability_topic": self.available_topic,
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": {"identifiers": [device_id], "name": f"{camera} actions", "manufacturer": "actionstream"},
            }
            topic = f"{self.config.discovery_prefix}/binary_sensor/{object_id}/config"
            self._enqueue(_Message(topic, 1, True, json.dumps(config).encode()))

    async def __aenter__(self) -> MqttSink:
        self._loop = asyncio.get_running_loop()
        self._client = self._make_client()
        self.metrics.mqtt_connected.set(0)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client.connect_async(
            self._broker.host,
            self._broker.port,
            keepalive=self.config.keepalive_s,
            clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client.loop_start()
        log.info("MQTT: connecting to %s as %s", self._broker.display, self._client_id)
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Publish ``offline``, wait (bounded) for the queue to be acknowledged, disconnect: normally when everything
        was delivered, else with the Will (reason code 0x04), so that ``offline`` is what stays retained."""
        assert self._client is not None, "MqttSink was not entered"
        self._closing = True
        # Disconnected: the broker has already published our Last Will, and nothing can be delivered now.
        if self._connected:
            self._enqueue(_Message(self.available_topic, 1, True, b"offline"))
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        while self._connected and self.queued and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        with self._lock:
            self._closed = True
            delivered = self._connected and not (self._pending or self._inflight)
            left = len(self._pending) + len(self._inflight)
            self._pending.clear()
            self._volatile.clear()
            self._latest.clear()
            self._inflight.clear()
        if left:
            log.warning("MQTT: %d message(s) were not delivered to %s before shutdown", left, self._broker.display)
        properties = Properties(PacketTypes.DISCONNECT)
        properties.SessionExpiryInterval = 0  # nothing of ours is left for the broker to keep
        reason = ReasonCode(PacketTypes.DISCONNECT, identifier=0 if delivered else 4)  # 4: with the Will
        self._client.disconnect(reasoncode=reason, properties=properties)
        try:
            await asyncio.wait_for(asyncio.to_thread(self._client.loop_stop), FLUSH_TIMEOUT_S)
        except TimeoutError:
            log.warning("MQTT: the network thread did not stop within %.0f s", FLUSH_TIMEOUT_S)
        self._connected = False
        self.metrics.mqtt_connected.set(0)
        self.metrics.mqtt_queued_messages.set(0)

    # -- the queue (all under self._lock) -----------------------------------------------------------------------

    def _enqueue(self, message: _Message) -> None:
        if not _valid_topic(message.topic):
            log.error("MQTT: not publishing to %r: not a valid topic name", message.topic)
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("MqttSink is closed")
            number = next(self._numbers)
            if message.retain:  # state: the newest value of a topic replaces the one not yet handed over
                older = self._latest.get(message.topic)
                if older is not None:
                    del self._pending[older]
                self._latest[message.topic] = number
            else:
                if len(self._volatile) >= self.config.queue_max:
                    self._drop_oldest()
                self._volatile.append(number)
            self._pending[number] = message
            self._pump()
            self._count()

    def _drop_oldest(self) -> None:
        del self._pending[self._volatile.popleft()]
        self.dropped += 1
        self.metrics.mqtt_dropped_messages.labels(reason="queue_full").inc()
        now = self._dropped_at = time.monotonic()
        if now - self._drop_logged_at >= 10.0:
            self._drop_logged_at = now
            log.warning(
                "MQTT: queue full (queue_max=%d, broker %s): dropped the oldest message (%d dropped so far)",
                self.config.queue_max,
                self._broker.display,
                self.dropped,
            )

    def _pump(self) -> None:
        """Hand waiting messages to paho, in order, while connected and the in-flight window has room."""
        client = self._client
        if not self._connected or client is None or not client.is_connected():
            return
        while self._pending and len(self._inflight) < INFLIGHT_WINDOW:
            number, message = next(iter(self._pending.items()))
            published_at = time.time()
            payload = message.payload
            if payload is None:  # an event: latency counts up to now
                assert message.event is not None
                payload = json.dumps(message.event.payload(published_at)).encode()
            info = client.publish(message.topic, payload, message.qos, message.retain)
            # QoS 1/2: paho keeps the message until it is acknowledged, also when the connection has just gone
            # (rc NO_CONN): it sends it after reconnecting. QoS 0 is only sent while the connection is up.
            taken = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
                message.qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
            )
            if not taken:
                return  # the connection just went; on_disconnect follows and we go on after reconnecting
            del self._pending[number]
            if message.retain:
                del self._latest[message.topic]
            else:
                self._volatile.popleft()  # the oldest waiting non-retained message is this one
            event = message.event
            if event is not None and event.from_clip:  # an end that no clip caused has no capture→publish latency
                self.metrics.event_latency_seconds.labels(event.camera).observe(published_at - event.received_at)
            if message.qos > 0:
                self._inflight[info.mid] = message

    def _count(self) -> None:
        self.metrics.mqtt_queued_messages.set(len(self._pending) + len(self._inflight))

    # -- set-up ---------------------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        config, broker = self.config, self._broker
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=mqtt.MQTTv5)
        username = config.username or broker.username
        try:
            password = config.secret() if (config.password or config.password_file) else broker.password
        except OSError as e:
            raise ConfigError(f"mqtt.password_file: cannot read {config.password_file} ({e.strerror})") from None
        if password:
            self._secrets = [s for s in {password, quote(password, safe="")} if s]
        if username:
            client.username_pw_set(username, password)
        if broker.tls:
            client.tls_set_context(self._tls_context())
            client.tls_insecure_set(config.tls_insecure)
        client.will_set(self.available_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.max_inflight_messages = 0  # no second window: ours bounds what paho holds, and paho re-sends it all
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _tls_context(self) -> ssl.SSLContext:
        config = self.config
        try:
            context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"mqtt.ca_file: cannot load CA certificates from {config.ca_file} ({e})") from None
        if config.cert_file:
            try:
                context.load_cert_chain(str(config.cert_file), str(config.key_file) if config.key_file else None)
            except (OSError, ssl.SSLError) as e:
                what = f"{config.cert_file}" + (f" / {config.key_file}" if config.key_file else "")
                raise ConfigError(f"mqtt.cert_file/key_file: cannot load the client certificate {what} ({e})") from None
        return context

    # -- paho's callbacks (network thread): they never take self._lock, paho holds its own locks here --------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._connack_refused = True  # the disconnect that follows needs no words of its own
            what = f"MQTT broker {self._broker.display} refused the connection: {str(reason).lower()}; retrying"
            self._problem_seen(what, logging.ERROR)
            return
        # First, on every (re)connect; paho then re-sends what it had in flight, and we go on with what waits.
        client.publish(self.available_topic, "online", qos=1, retain=True)
        self._call_soon(self._connected_cb)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        what = _describe_connect_error(sys.exc_info()[1])
        self._problem_seen(f"MQTT broker {self._broker.display} {what}; retrying", logging.WARNING)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        refused, self._connack_refused = self._connack_refused, False
        self._call_soon(self._disconnected_cb, reason, refused)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        # A PUBCOMP saying "packet identifier not found" answers the PUBREL paho re-sends after a reconnect when the
        # broker lost our session (no persistence): the broker had taken the message with its PUBREC; it is done.
        if getattr(reason, "is_failure", False) and reason.value != _PACKET_ID_NOT_FOUND:
            self._call_soon(self._refused, mid, str(reason).lower())  # MQTT 5 PUBACK/PUBREC with an error
        else:
            self._call_soon(self._acked, mid)

    def _call_soon(self, callback: Any, *args: Any) -> None:
        try:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the event loop is closed: the sink is gone
            pass

    # -- ... continued on the event loop -----------------------------------------------------------------------

    def _connected_cb(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._connected = True
            self.metrics.mqtt_connected.set(1)
            if self._recovery_due or not self._problems_logged:
                waiting = len(self._pending) + len(self._inflight)
                log.info("MQTT: connected to %s (%d message(s) waiting)", self._broker.display, waiting)
                self._recovery_due = False
            self._pump()
            self._count()

    def _disconnected_cb(self, reason: Any, refused: bool = False) -> None:
        with self._lock:
            was_connected, self._connected = self._connected, False
            self.metrics.mqtt_connected.set(0)
            # What paho has in flight stays paho's: it sends it again after the next connect, before anything newer.
        if was_connected and not self._closing:
            detail = str(reason).lower()
            detail = "" if detail in ("unspecified error", "success") else f" ({detail})"
            what = f"MQTT: lost the connection to {self._broker.display}{detail}; reconnecting"
            self._problem_seen(what, logging.WARNING)
        elif not was_connected and not refused and not self._closing:
            # Closed before any CONNACK; over TLS, typically a client certificate the broker requires or rejects
            # (TLS 1.3 reports that only after the client's side of the handshake has completed).
            hint = " (a missing or rejected TLS client certificate?)" if self._broker.tls else ""
            what = f"MQTT broker {self._broker.display} closed the connection before accepting it{hint}; retrying"
            self._problem_seen(what, logging.WARNING)

    def _acked(self, mid: int) -> None:
        with self._lock:
            if self._inflight.pop(mid, None) is not None:
                self._pump()
                self._count()

    def _refused(self, mid: int, reason: str) -> None:
        with self._lock:
            message = self._inflight.pop(mid, None)
            if message is None:
                return
            self.metrics.mqtt_dropped_messages.labels(reason="refused").inc()
            self._pump()
            self._count()
        hint = " (does the broker's ACL allow this client to publish there?)" if "authori" in reason else ""
        what = f"MQTT broker {self._broker.display} refused a message on {message.topic!r}: {reason}{hint}; dropped"
        self._problem_seen(what, logging.ERROR)

    def _problem_seen(self, what: str, level: int) -> None:
        """Log a connection problem once per distinct text (again after LOG_REPEAT_S); never the password."""
        now = time.monotonic()
        if now - self._problems_logged.get(what, -LOG_REPEAT_S) < LOG_REPEAT_S:
            return
        self._problems_logged[what] = now
        self._recovery_due = True
        for secret in self._secrets:
            what = what.replace(secret, "***")
        log.log(level, "%s", what)


class StdoutSink:
    """One event JSON object per line on stdout, written by a thread of its own (see the module docstring); state,
    status and stats only at DEBUG level."""

    def __init__(self, metrics: Metrics, stream: TextIO | None = None, *, queue_max: int = STDOUT_QUEUE_MAX) -> None:
        self.metrics = metrics
        self._stream = stream  # None: sys.stdout at the time of writing
        self.queue_max = queue_max
        self.dropped = 0
        """Lines dropped because ``queue_max`` of them waited (the oldest go first)."""
        self._lines: collections.deque[str] = collections.deque()
        self._changed = threading.Condition()
        self._written = 0  # lines written so far (the shutdown waits while this grows)
        self._closing = False
        self._writer: threading.Thread | None = None
        self._drop_logged_at = -LOG_REPEAT_S

    def publish_event(self, event: Event) -> None:
        self.metrics.events.labels(event.camera, event.label, event.type).inc()
        published_at = time.time()
        line = json.dumps(event.payload(published_at))
        with self._changed:
            if len(self._lines) >= self.queue_max:
                self._lines.popleft()
                self._dropped(1)
            self._lines.append(line)
            self._changed.notify()
        if event.from_clip:
            self.metrics.event_latency_seconds.labels(event.camera).observe(published_at - event.received_at)

    def publish_state(self, camera: str, label: str, on: bool) -> None:
        log.debug("%s/%s: %s", camera, label, "ON" if on else "OFF")

    def publish_status(self, camera: str, online: bool) -> None:
        log.debug("%s: %s", camera, "online" if online else "offline")

    def publish_stats(self, stats: dict) -> None:
        log.debug("stats: %s", json.dumps(stats))

    def publish_snapshot(self, camera: str, label: str, jpeg: bytes) -> None:
        log.debug("%s/%s: snapshot, %d bytes", camera, label, len(jpeg))

    def announce(self, camera: str, labels: Iterable[str]) -> None:
        pass

    async def __aenter__(self) -> StdoutSink:
        # A daemon: a reader that never reads again must not keep the process from exiting.
        self._writer = threading.Thread(target=self._write, name="stdout-sink", daemon=True)
        self._writer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Write every line that waits; give up only when stdout takes nothing for FLUSH_TIMEOUT_S."""
        writer = self._writer
        assert writer is not None, "StdoutSink was not entered"
        with self._changed:
            self._closing = True
            self._changed.notify()
        written, progress_at = -1, time.monotonic()
        while writer.is_alive():
            if self._written != written:
                written, progress_at = self._written, time.monotonic()
            elif time.monotonic() - progress_at > FLUSH_TIMEOUT_S:
                with self._changed:
                    left = len(self._lines)
                log.warning("stdout took nothing for %.0f s: %d event line(s) not written", FLUSH_TIMEOUT_S, left)
                return
            await asyncio.sleep(0.02)

    def _write(self) -> None:
        """The writer thread: lines in order, a batch at a time, until closing and none is left."""
        while True:
            with self._changed:
                while not self._lines and not self._closing:
                    self._changed.wait()
                if not self._lines:
                    return
                batch = [self._lines.popleft() for _ in range(min(len(self._lines), STDOUT_BATCH))]
            stream = self._stream or sys.stdout
            try:
                stream.write("".join(line + "\n" for line in batch))
                stream.flush()
            except (OSError, ValueError) as e:  # stdout closed (the reader went away): these lines are lost
                with self._changed:
                    self._dropped(len(batch), f"cannot write to stdout ({e})")
                continue
            self._written += len(batch)

    def _dropped(self, count: int, why: str = "") -> None:
        """Count dropped lines (under self._changed); logged at most every 10 s."""
        self.dropped += count
        self.metrics.stdout_dropped_lines.inc(count)
        now = time.monotonic()
        if now - self._drop_logged_at >= 10.0:
            self._drop_logged_at = now
            why = why or f"queue full (queue_max={self.queue_max}): dropped the oldest line"
            log.warning("stdout: %s (%d dropped so far)", why, self.dropped)
