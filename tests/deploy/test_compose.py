"""deploy/compose.yaml against the Compose Specification's JSON schema (as check-jsonschema ships it), and the
stack's wiring: mounts exist, the agent's config is valid and names the stack's services, Prometheus scrapes the
agent, Grafana gets its datasource and dashboard, and the example mosquitto config and password file work."""

from __future__ import annotations

import getpass
import re
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import load_config
from tests.deploy.tools import DEPLOY, run, tool
from tests.rtsp_server import _wait_listening, free_port

COMPOSE = DEPLOY / "compose.yaml"
DEMO_USER, DEMO_PASSWORD = "actionstream", "actionstream-demo"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def schema_check(path: Path) -> tuple[int, str]:
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)])
    return result.returncode, result.stdout + result.stderr


def test_compose_file_passes_the_compose_schema():
    code, out = schema_check(COMPOSE)
    assert code == 0, out


def test_gpu_reservation_is_valid_once_uncommented(tmp_path):
    """The commented GPU block is the real thing: uncommented, the file still passes the schema and reserves a GPU."""
    lines = COMPOSE.read_text().splitlines()
    start = lines.index("    # deploy:")
    block = []
    for line in lines[start:]:
        if not line.startswith("    # ") or (block and not line.startswith("    #   ")):
            break
        block.append(line)
    assert len(block) >= 6
    enabled = lines[:start] + [b.replace("    # ", "    ", 1) for b in block] + lines[start + len(block) :]
    path = tmp_path / "compose.yaml"
    path.write_text("\n".join(enabled) + "\n")
    code, out = schema_check(path)
    assert code == 0, out
    devices = yaml.safe_load(path.read_text())["services"]["agent"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_schema_check_does_catch_mistakes(tmp_path):
    bad = compose()
    bad["services"]["agent"]["volume"] = bad["services"]["agent"].pop("volumes")  # a typo'd key
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(bad))
    code, out = schema_check(path)
    assert code != 0 and "volume" in out, out


def test_stack_has_every_part():
    services = compose()["services"]
    assert {"mosquitto", "agent", "prometheus", "grafana", "camera", "camera-publisher", "demo-stream"} <= set(services)
    for name, service in services.items():  # pinned images, never latest
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
    agent = services["agent"]
    assert agent["build"]["context"] == ".." and (DEPLOY.parent / agent["build"]["dockerfile"]).is_file()
    assert "/etc/actionstream/config.yaml" in " ".join(agent["command"])
    assert services["camera-publisher"]["depends_on"]["demo-stream"]["condition"] == "service_completed_successfully"


def _binds(service: dict) -> list[tuple[str, str]]:
    out = []
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        if source.startswith("."):
            out.append((source, target))
    return out


def test_bind_mounts_exist():
    for name, service in compose()["services"].items():
        for source, _ in _binds(service):
            if source == "../models":  # the user's models (gitignored): docker creates it when absent
                continue
            assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"


def test_agent_config_is_valid_and_wired_to_the_stack(monkeypatch):
    services = compose()["services"]
    agent = services["agent"]
    config_source = next(s for s, t in _binds(agent) if t == "/etc/actionstream/config.yaml")
    monkeypatch.setenv("MQTT_PASSWORD", DEMO_PASSWORD)
    monkeypatch.setenv("ACTIONSTREAM_HTTP_TOKEN", "a-demo-token")
    monkeypatch.delenv("ACTIONSTREAM_MODEL", raising=False)
    config = load_config(DEPLOY / config_source)
    # The broker and camera URLs name services of the stack.
    assert re.match(r"mqtt://mosquitto:1883$", config.mqtt.url) and config.mqtt.username == DEMO_USER
    assert agent["environment"]["MQTT_PASSWORD"] == "${MQTT_PASSWORD:-" + DEMO_PASSWORD + "}"
    # The API and status page take a token from the environment; the evidence lives on a named volume.
    assert config.http.token is not None and agent["environment"]["ACTIONSTREAM_HTTP_TOKEN"].startswith("${")
    assert config.evidence.enabled and any(
        v.split(":")[1] == str(config.storage.path) and not v.startswith(".") for v in agent["volumes"]
    )
    (camera,) = config.cameras
    url = camera.url.get_secret_value()
    assert url.startswith("rtsp://camera:8554/")
    publisher = " ".join(services["camera-publisher"]["command"])
    assert url in publisher and "-stream_loop -1" in publisher
    # The model is mounted where the config looks for it.
    model = next(iter(config.models.values())).path
    assert any(t == "/models" for _, t in _binds(agent)) and str(model).startswith("/models/")
    # The demo stream lands where the publisher reads it.
    stream_volume = services["demo-stream"]["volumes"][0].split(":")
    publisher_volume = services["camera-publisher"]["volumes"][0].split(":")
    assert stream_volume[0] == publisher_volume[0] and "write_scripted_stream" in services["demo-stream"]["command"][0]
    assert f"{publisher_volume[1]}/stream.mp4" in publisher
    # Metrics: published port, and Prometheus' target, are the config's.
    assert f"{config.metrics.port}:{config.metrics.port}" in agent["ports"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"agent:{config.metrics.port}" in targets


def test_demo_stream_command_runs_torch_free(tmp_path):
    """The one-shot service's script, as the image runs it (numpy + PyAV only), on a shorter stream."""
    script = compose()["services"]["demo-stream"]["command"][0]
    script = script.replace('"/var/lib/actionstream/data"', repr(str(tmp_path))).replace("minutes=3", "minutes=0.05")
    code = "import sys; sys.modules['torch'] = None\n" + script  # importing torch would fail here
    result = run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "stream.mp4").stat().st_size > 0 and (tmp_path / "stream.json").is_file()
    assert "scripted actions" in result.stdout


def test_grafana_provisioning_matches_the_mounts():
    grafana = compose()["services"]["grafana"]
    binds = dict((t, s) for s, t in _binds(grafana))
    provisioning = DEPLOY / binds["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert [(d["type"], d["url"]) for d in datasources] == [("prometheus", "http://prometheus:9090")]
    providers = yaml.safe_load((provisioning / "dashboards" / "actionstream.yaml").read_text())["providers"]
    folder = providers[0]["options"]["path"]
    dashboards = [t for t in binds if t.startswith(folder + "/") and t.endswith(".json")]
    assert dashboards and binds[dashboards[0]] == "./grafana/actionstream.json"


def _connect(port: int, username: str, password: str) -> bool:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set(username, password)
    result: list = []
    client.on_connect = lambda c, u, f, reason, p: result.append(not reason.is_failure)
    client.connect("127.0.0.1", port, keepalive=5)
    deadline = time.monotonic() + 5
    while not result and time.monotonic() < deadline:
        client.loop(timeout=0.05)
    client.disconnect()
    return bool(result and result[0])


def test_mosquitto_config_and_example_password_file(tmp_path):
    """deploy/mosquitto/mosquitto.conf as the container reads it (paths and port moved here): mosquitto accepts
    every directive, and the example password file lets the agent's demo user in and nobody else."""
    mosquitto = tool("mosquitto")
    binds = {t: s for s, t in _binds(compose()["services"]["mosquitto"])}
    conf = (DEPLOY / binds["/mosquitto/config/mosquitto.conf"]).read_text()
    port = free_port()
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/mosquitto/config/passwd", str(DEPLOY / binds["/mosquitto/config/passwd"]))
    conf = conf.replace("/mosquitto/data/", f"{tmp_path}/")
    conf = f"user {getpass.getuser()}\n" + conf
    assert "password_file" in conf and "allow_anonymous false" in conf
    (tmp_path / "mosquitto.conf").write_text(conf)
    with (tmp_path / "log").open("w") as log:
        proc = subprocess.Popen([mosquitto, "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log)
    try:
        _wait_listening(port, 10)
        assert _connect(port, DEMO_USER, DEMO_PASSWORD)
        assert not _connect(port, DEMO_USER, "wrong")
        assert not _connect(port, "someone", DEMO_PASSWORD)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "Error" not in (tmp_path / "log").read_text()


@pytest.mark.parametrize(
    "path", sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml")), ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_every_yaml_file_parses(path):
    assert list(yaml.safe_load_all(path.read_text()))
