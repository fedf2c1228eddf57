"""A real mosquitto broker for tests (optionally TLS and passwords), and a subscriber that records what arrives."""

from __future__ import annotations

import asyncio
import getpass
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.rtsp_server import _wait_listening, free_port


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A self-signed CA (EC P-256, valid 2 days): ``(cert, key)``."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", f"/CN=actionstream test {name}"]
        + ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    )
    return cert, key


def make_server_cert(directory: Path, ca: tuple[Path, Path], name: str = "server") -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 / localhost signed by ``ca``: ``(cert, key)``."""
    cert, key, csr, ext = (directory / f"{name}.{s}" for s in ("crt", "key", "csr", "ext"))
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(
        ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"]
    )
    _openssl(
        ["x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial"]
        + ["-days", "2", "-out", str(cert), "-extfile", str(ext)]
    )
    return cert, key


def make_client_cert(directory: Path, ca: tuple[Path, Path], name: str) -> tuple[Path, Path]:
    """A TLS client certificate with CN ``name`` signed by ``ca``: ``(cert, key)``."""
    cert, key, csr, ext = (directory / f"{name}.{s}" for s in ("crt", "key", "csr", "ext"))
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    _openssl(
        ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"]
    )
    _openssl(
        ["x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial"]
        + ["-days", "2", "-out", str(cert), "-extfile", str(ext)]
    )
    return cert, key


def _openssl(args: list[str]) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


class Mosquitto:
    """One mosquitto listener on a free 127.0.0.1 port, configured in ``directory``.

    ``users`` (name → password) creates a password file; anonymous clients are then refused unless
    ``allow_anonymous``. ``tls`` serves TLS with a CA generated here (:attr:`ca_file`). ``persistence`` keeps
    sessions and retained messages across :meth:`restart` (saved on the SIGTERM of :meth:`stop`). ``acl`` is the
    text of an ACL file (``user NAME`` / ``topic [read|write|readwrite|deny] TOPIC`` lines). ``client_certs`` (with
    ``tls``) requires a client certificate signed by the broker's CA (:attr:`ca`) whose CN is the user name.
    ``settings``: more lines for mosquitto.conf (e.g. ``max_queued_messages 0``).
    """

    def __init__(
        self,
        directory: Path,
        *,
        users: dict[str, str] | None = None,
        tls: bool = False,
        allow_anonymous: bool | None = None,
        persistence: bool = True,
        acl: str | None = None,
        client_certs: bool = False,
        settings: Iterable[str] = (),
    ) -> None:
        for tool in ("mosquitto", "mosquitto_passwd", "openssl"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed: run `make deps` (make test does)")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.tls = free_port(), tls
        self.ca_file: Path | None = None
        self.ca: tuple[Path, Path] | None = None  # (cert, key) of the CA that signed the server's certificate
        self.log_file = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        lines = [
            f"user {getpass.getuser()}",  # as root, mosquitto would switch to the `mosquitto` user
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if (allow_anonymous if allow_anonymous is not None else not users) else 'false'}",
            "log_dest stderr",
            "log_type all",
            "log_timestamp_format %H:%M:%S",
        ]
        if persistence:
            lines += ["persistence true", f"persistence_location {self.dir}/"]
        if users:
            password_file = self.dir / "passwd"
            for i, (user, password) in enumerate(users.items()):
                flags = ["-b", "-c"] if i == 0 else ["-b"]
                subprocess.run(["mosquitto_passwd", *flags, str(password_file), user, password], check=True)
            lines.append(f"password_file {password_file}")
        if tls:
            ca = make_ca(self.dir)
            cert, key = make_server_cert(self.dir, ca)
            self.ca_file, self.ca = ca[0], ca
            lines += [f"cafile {ca[0]}", f"certfile {cert}", f"keyfile {key}"]
        if client_certs:
            lines += ["require_certificate true", "use_identity_as_username true"]
        if acl is not None:
            (self.dir / "acl").write_text(acl)
            lines.append(f"acl_file {self.dir / 'acl'}")
        lines += list(settings)
        self.config_file = self.dir / "mosquitto.conf"
        self.config_file.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        log = self.log_file.open("a")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.config_file)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            _wait_listening(self.port, timeout)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start; its log:\n{self.log()[-2000:]}") from None

    def stop(self) -> None:
        """SIGTERM: mosquitto closes every connection and saves its database."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.send_signal(signal.SIGCONT)  # a paused broker takes the SIGTERM now
            self.proc.wait(timeout=10)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is read or answered (until :meth:`resume`)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Message(NamedTuple):
    topic: str
    payload: str  # decoded as UTF-8 (binary payloads: with replacement characters; Subscriber.raw has the bytes)
    retain: bool


class Subscriber:
    """Records ``(topic, payload, retain)`` in arrival order; reconnects (every 0.2-1 s) and resubscribes.

    ``persistent``: a fixed client id with a persistent session (clean_session=False, QoS 1), so that on a
    broker with persistence, messages published while this subscriber is away are delivered when it is back.
    ``qos``: of the subscription (2: the broker delivers each message it has once, also across its restarts).
    """

    def __init__(
        self,
        broker: Mosquitto,
        topics: str | Iterable[str] = "#",
        *,
        client_id: str | None = None,
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
        cert: tuple[Path, Path] | None = None,
        qos: int = 1,
    ) -> None:
        self.broker, self.qos = broker, qos
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.messages: list[Message] = []
        self.raw: list[bytes] = []  # each message's payload as it came, in the same order
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        if persistent and not client_id:
            raise ValueError("a persistent subscriber needs a client_id")
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or "", clean_session=not persistent, protocol=mqtt.MQTTv311
        )
        if username:
            self.client.username_pw_set(username, password)
        if broker.ca_file:
            certfile, keyfile = (str(cert[0]), str(cert[1])) if cert else (None, None)
            self.client.tls_set(ca_certs=str(broker.ca_file), certfile=certfile, keyfile=keyfile)
        self.client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> Subscriber:
        """Connect (retrying while the broker is down) and wait for the first SUBACK."""
        self.client.connect_async("127.0.0.1", self.broker.port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            raise TimeoutError(f"subscriber not subscribed to {self.topics} after {timeout} s")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if not reason.is_failure:
            client.subscribe([(t, self.qos) for t in self.topics])

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            payload = bytes(msg.payload)
            self.messages.append(Message(msg.topic, payload.decode(errors="replace"), bool(msg.retain)))
            self.raw.append(payload)

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def payloads(self, topic: str) -> list[str]:
        return [m.payload for m in self.snapshot() if m.topic == topic]

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout: float = 10.0) -> list[Message]:
        """Poll until ``predicate(messages)`` holds; the messages so far, or TimeoutError listing them."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.snapshot()
            if predicate(messages):
                return messages
            if time.monotonic() > deadline:
                tail = "\n".join(f"  {m}" for m in messages[-20:])
                raise TimeoutError(f"condition not met after {timeout} s; last messages:\n{tail}")
            time.sleep(0.02)

    async def until(self, predicate: Callable[[list[Message]], bool], timeout: float = 10.0) -> list[Message]:
        """:meth:`wait_for` for async tests: it keeps the event loop (and the sink's callbacks) running."""
        deadline = time.monotonic() + timeout
        while not predicate(self.snapshot()):
            if time.monotonic() > deadline:
                return self.wait_for(predicate, 0)
            await asyncio.sleep(0.02)
        return self.snapshot()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
