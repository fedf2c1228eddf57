"""Item 6: secrets stay secret, MQTT over TLS with client certificates and an ACL, no code from checkpoints or
configs, and /metrics binds where configured."""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.mosquitto import Mosquitto, Subscriber, make_client_cert
from tests.reliability.agentproc import EVENTS, AgentProcess, file_camera, run_cli
from tests.rtsp_server import RtspServer, free_port

pytestmark = pytest.mark.timeout(150)

CAMERA_PASSWORD = "c@m:Pa55/w%rd"  # characters that must be percent-encoded in a URL
MQTT_PASSWORD = "Mq77-Pa55word"
P = "actionstream"


def secret_forms(password: str) -> list[str]:
    return [password, urllib.parse.quote(password, safe=""), urllib.parse.quote(password)]


def listeners(pid: int, port: int) -> set[str]:
    """Addresses the process listens on at ``port`` (TCP, IPv4 and IPv6), from /proc."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # LISTEN
                if table == "tcp":
                    found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
                else:
                    found.add("::" if set(address) == {"0"} else address)
    return found


def test_passwords_never_leave_the_process(tmp_path, tiny_model, record):
    """A camera and the broker with passwords; everything the agent says is captured and searched."""
    server = RtspServer()
    server.start()
    broker = Mosquitto(tmp_path / "broker", tls=True, users={"agent": MQTT_PASSWORD, "reader": "reader-pw"})
    broker.start()
    everything = Subscriber(broker, "#", username="reader", password="reader-pw").start()
    quoted = urllib.parse.quote(CAMERA_PASSWORD, safe="")
    metrics_port = free_port()
    config = {
        "cameras": [
            {"name": "door", "url": server.url("viewer", quoted), "every_s": 0.5, "read_timeout_s": 3},
            {  # refused at once: FFmpeg's error message quotes the URL it failed on
                "name": "gone",
                "url": f"rtsp://viewer:{quoted}@127.0.0.1:{free_port()}/x",
                "backoff_initial_s": 0.2,
                "backoff_max_s": 0.5,
            },
        ],
        "models": {"tiny": {"path": str(tiny_model)}},
        "mqtt": {
            "url": broker.url,
            "ca_file": str(broker.ca_file),
            "username": "agent",
            "password": "${TEST_MQTT_PASSWORD}",
            "stats_interval_s": 1,
        },
        "metrics": {"host": "127.0.0.1", "port": metrics_port},
        "events": EVENTS,
        "log_level": "DEBUG",
    }
    env = {"TEST_MQTT_PASSWORD": MQTT_PASSWORD}
    try:
        with AgentProcess(tmp_path / "agent", config, env=env) as agent:
            agent.wait_for(lambda: everything.payloads(f"{P}/door/events"), 60, "events from the camera")
            agent.wait_for(lambda: any("camera gone" in line for line in agent.stderr), 20, "the failing camera")
            everything.wait_for(lambda ms: any(m.topic == f"{P}/stats" for m in ms), 10)
            bound = listeners(agent.pid, metrics_port)
            exposition = urllib.request.urlopen(agent.metrics_url, timeout=5).read().decode()
            code = agent.stop()
        check = run_cli("check", "-c", str(agent.config_file), env=env)
        # Error paths: a fatal model error with the same config, and the quick form with a malformed --camera.
        broken = yaml.safe_load(agent.config_file.read_text())
        broken["models"]["tiny"]["path"] = str(tmp_path / "missing.onnx")
        (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
        fatal = run_cli("run", "-c", str(tmp_path / "broken.yaml"), env=env)
        quick = run_cli("run", "--camera", f"door:rtsp://viewer:{quoted}@h/x", "--model", str(tiny_model))
    finally:
        everything.stop()
        broker.stop()
        server.kill()
    captured = {
        "log (DEBUG)": agent.log(),
        "stdout": "\n".join(agent.stdout),
        "metrics": exposition,
        "MQTT payloads and topics": "\n".join(f"{m.topic} {m.payload}" for m in everything.snapshot()),
        "`check` output": check.stdout + check.stderr,
        "error messages of failing runs": fatal.stdout + fatal.stderr + quick.stdout + quick.stderr,
    }
    secrets = secret_forms(CAMERA_PASSWORD) + secret_forms(MQTT_PASSWORD)
    leaks = {where for where, text in captured.items() if any(s in text for s in secrets)}
    redacted_shown = "viewer:***@" in agent.log() and "viewer:***@" in check.stdout
    record.row(
        6,
        "camera password (percent-encoded specials) and MQTT password (from ${ENV}), log level DEBUG, one camera "
        "failing (FFmpeg quotes its URL)",
        "no password in logs, stdout, metrics, MQTT payloads, `check` output or error messages; URLs shown as "
        "user:***@host",
        f"places searched: {len(captured)}; with a password: {len(leaks)}; redacted form shown: {redacted_shown}; "
        f"exit {code}, check exit {check.returncode}, failing runs exit {fatal.returncode} and {quick.returncode}"
        f" (traceback: {'Traceback' in fatal.stderr + quick.stderr})",
    )
    record.row(
        6,
        "metrics.host 127.0.0.1",
        "/metrics listens on 127.0.0.1 only",
        f"listening on: {', '.join(sorted(bound))}",
    )
    assert not leaks and redacted_shown and code == 0 and check.returncode == 0, leaks
    assert fatal.returncode == 2 and quick.returncode == 2 and "Traceback" not in fatal.stderr + quick.stderr
    assert bound == {"127.0.0.1"}


@pytest.fixture
def cert_broker(tmp_path):
    acl = "user agent\ntopic readwrite actionstream/#\ntopic deny actionstream/door/events\n"
    acl += "\nuser reader\ntopic read actionstream/#\n"
    broker = Mosquitto(tmp_path / "broker", tls=True, client_certs=True, acl=acl)
    broker.start()
    yield broker
    broker.stop()


def test_tls_client_certificate_and_an_acl_that_forbids_the_events_topic(
    cert_broker, tmp_path, stream_file, tiny_model, record
):
    cert = make_client_cert(tmp_path, cert_broker.ca, "agent")
    reader = make_client_cert(tmp_path, cert_broker.ca, "reader")
    config = {
        "cameras": [file_camera("door", stream_file)],
        "models": {"tiny": {"path": str(tiny_model)}},
        "mqtt": {"url": cert_broker.url, "ca_file": str(cert_broker.ca_file), "cert_file": str(cert[0])},
        "events": EVENTS,
    }
    config["mqtt"]["key_file"] = str(cert[1])
    with Subscriber(cert_broker, f"{P}/#", cert=reader) as sub:
        with AgentProcess(tmp_path / "agent", config) as agent:
            refused = lambda: [line for line in agent.stderr if "refused a message" in line]  # noqa: E731
            agent.wait_for(refused, 60, "the refusal logged")
            agent.wait_for(lambda: agent.value("actionstream_mqtt_dropped_messages_total", reason="refused") >= 20, 30)
            connects = cert_broker.log().count(" as actionstream-")  # "New client connected from … as <id>"
            status = sub.wait_for(lambda ms: any(m.topic == f"{P}/door/status" for m in ms), 10)
            alive, connected = agent.alive(), agent.value("actionstream_mqtt_connected")
            code = agent.stop()
    lines = refused()
    clear = len(lines) == 1 and f"'{P}/door/events'" in lines[0] and "not authorized" in lines[0] and "ACL" in lines[0]
    events_leaked = any(m.topic.endswith("/events") for m in status)
    record.row(
        6,
        "MQTT over TLS with a client certificate; the broker's ACL forbids {prefix}/door/events",
        "connects with the certificate; the refusal is one clear error naming the topic; refused messages "
        "counted, not retried; other topics delivered; no reconnect loop",
        f"connected: {connected == 1}; refusal lines: {len(lines)}, naming topic and ACL: {clear}; agent connections "
        f"to the broker: {connects}; status topic delivered: {bool(status)}; events delivered: {events_leaked}; "
        f"alive: {alive}, exit {code}",
    )
    assert connected == 1 and clear and connects == 1 and not events_leaked and alive and code == 0, lines


def test_tls_without_the_client_certificate(cert_broker, tmp_path, stream_file, tiny_model, record):
    config = {
        "cameras": [file_camera("door", stream_file)],
        "models": {"tiny": {"path": str(tiny_model)}},
        "mqtt": {"url": cert_broker.url, "ca_file": str(cert_broker.ca_file)},
        "events": EVENTS,
    }
    with AgentProcess(tmp_path / "agent", config) as agent:
        agent.wait_for(lambda: any("MQTT broker" in line for line in agent.stderr), 30, "the failure logged")
        agent.wait_for(
            lambda: agent.value("actionstream_events_total", camera="door", label="still", type="update"), 30
        )
        problems = [line for line in agent.stderr if "MQTT broker" in line]
        alive, connected = agent.alive(), agent.value("actionstream_mqtt_connected")
        code = agent.stop()
    record.row(
        6,
        "MQTT over TLS, the broker requires a client certificate, none configured",
        "one clear error naming the broker, retried with backoff; cameras keep running; process alive",
        f"error lines: {len(problems)}; connected: {connected == 1}; alive: {alive}, exit {code}",
    )
    assert len(problems) == 1 and cert_broker.url in problems[0] and connected == 0 and alive and code == 0, problems


EVIL = """
import os, sys, torch

class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))

torch.save({"state_dict": {}, "meta": {"x": Evil()}}, sys.argv[1])
"""


def test_malicious_checkpoint_is_refused_without_running(tmp_path, record):
    marker, checkpoint = tmp_path / "pwned", tmp_path / "evil.pth"
    subprocess.run([sys.executable, "-c", EVIL, str(checkpoint), str(marker)], check=True, cwd=ROOT)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    done = subprocess.run(
        [sys.executable, "export/to_onnx.py", "--arch", "i3d_r50", "--depth", "18", "--width", "8"]
        + ["--checkpoint", str(checkpoint), "--labels", str(labels), "--out", str(tmp_path / "x.onnx")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    named = len(errors) == 1 and "system" in errors[0] and str(checkpoint) in errors[0]
    record.row(
        6,
        "checkpoint whose pickle calls os.system (export/to_onnx.py --checkpoint)",
        "refused before anything runs: exit 2, one error naming the file and the global",
        f"exit {done.returncode}; names file and global: {named}; code ran: {marker.exists()}",
    )
    assert done.returncode == 2 and named and not marker.exists(), done.stderr


def test_config_cannot_construct_python_objects(tmp_path, record):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f"cameras: !!python/object/apply:os.system ['touch {marker}']\nmodels: {{}}\n")
    done = run_cli("check", "-c", str(config))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    record.row(
        6,
        "config with a YAML tag that would call os.system",
        "refused as not valid YAML, nothing runs",
        f"exit {done.returncode}; error lines: {len(errors)}; code ran: {marker.exists()}",
    )
    assert done.returncode == 2 and len(errors) == 1 and not marker.exists()
