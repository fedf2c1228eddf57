"""Config loading: one path, typed, each error one line naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.cli import main as cli
from agent.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def _base(**camera) -> dict:
    return {"cameras": [{"name": "dock1", "url": "rtsp://u:pw@h/s", **camera}], "models": {"m": {"path": "m.onnx"}}}


def test_example_config_is_valid(monkeypatch):
    monkeypatch.setenv("DOCK1_PASSWORD", "hun#ter2")
    config = load_config(ROOT / "config.example.yaml")
    assert [c.name for c in config.cameras] == ["dock1", "lobby"]
    assert config.cameras[0].stream_url() == "rtsp://viewer:hun%23ter2@192.0.2.10:554/stream1"
    assert "hun#ter2" not in repr(config) and "hun%23ter2" not in repr(config)
    assert config.events_of(config.cameras[0]).threshold == 0.6
    assert config.model_of(config.cameras[1]) == "kinetics"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_base(modle="m"), "cameras.0.modle: unknown key"),
        (_base(every_s="often"), "cameras.0.every_s"),
        (_base(model="nope"), "model 'nope' is not in `models`"),
        ({**_base(), "mqtt": {"url": "http://x"}}, "mqtt.url"),
        ({**_base(), "events": {"threshold": 0.2, "end_threshold": 0.3}}, "end_threshold"),
        ({"cameras": [], "models": {"m": {"path": "m.onnx"}}}, "cameras"),
        ({"models": {"m": {"path": "m.onnx"}}}, "cameras: Field required"),
        ({**_base(), "models": {"m": {"path": "m.onnx", "workers": 0}}}, "models.m.workers"),
        (_base(decode_threads=0), "cameras.0.decode_threads"),
        (_base(hwaccel="nvdec"), "cameras.0.hwaccel: Input should be 'off', 'auto' or 'cuda'"),
    ],
)
def test_bad_configs_name_the_key(data, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(data, "site.yaml")
    message = str(e.value)
    assert message.startswith("site.yaml: ") and expected in message
    assert "\n" not in message and "pw@" not in message


def test_duplicate_camera_names():
    data = _base()
    data["cameras"].append({"name": "dock1", "url": "rtsp://other"})
    with pytest.raises(ConfigError, match="duplicate camera names: dock1"):
        parse_config(data)


def test_env_substitution(monkeypatch):
    monkeypatch.setenv("CAM_HOST", "10.1.2.3")
    config = parse_config(_base(url="rtsp://${CAM_HOST}/s", transport="${TRANSPORT:-tcp}"))
    assert config.cameras[0].url.get_secret_value() == "rtsp://10.1.2.3/s"
    assert config.cameras[0].transport == "tcp"
    with pytest.raises(ConfigError, match=r"cameras\.0\.url: environment variable MISSING_VAR is not set"):
        parse_config(_base(url="rtsp://${MISSING_VAR}/s"))


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def _write(tmp_path, data) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_missing_model_file(tmp_path, capsys):
    data = _base()
    data["models"]["m"]["path"] = str(tmp_path / "missing.onnx")
    assert cli(["check", "-c", str(_write(tmp_path, data))]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'missing.onnx'}: model file not found"


def test_check_model_without_spec(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["scores"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2])],
    )
    path = tmp_path / "nospec.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    data = _base()
    data["models"]["m"]["path"] = str(path)
    assert cli(["check", "-c", str(_write(tmp_path, data))]) == 2
    err = capsys.readouterr().err
    assert "actionstream.spec" in err and str(path) in err and err.count("\n") == 1


def test_check_unknown_key_exits_nonzero(tmp_path, capsys):
    assert cli(["check", "-c", str(_write(tmp_path, _base(fps=30)))]) == 2
    assert "cameras.0.fps: unknown key" in capsys.readouterr().err


def test_check_ok_prints_summary_without_password(tmp_path, capsys, tiny_model):
    data = _base()
    data["models"]["m"]["path"] = str(tiny_model)
    assert cli(["check", "-c", str(_write(tmp_path, data))]) == 0
    out = capsys.readouterr().out
    assert "slowfast_r50_4x16" in out and "rtsp://u:***@h/s" in out and "pw" not in out.replace("pw", "", 0)
    assert ":pw@" not in out


def test_quick_form_builds_the_same_config():
    from agent.cli import _quick_config, parser

    args = parser().parse_args(
        ["run", "--camera", "door=rtsp://u:pw@h/1", "--camera", "yard=/v.mp4", "--model", "m.onnx"]
        + ["--mqtt", "mqtt://broker:1883", "--metrics-port", "9200", "--threshold", "0.7", "--every", "0.5"]
    )
    config = _quick_config(args)
    assert [c.name for c in config.cameras] == ["door", "yard"]
    assert all(c.every_s == 0.5 and config.model_of(c) == "model" for c in config.cameras)
    assert config.mqtt.url == "mqtt://broker:1883" and config.metrics.port == 9200
    assert config.events.threshold == 0.7 and config.events.end_threshold < 0.7


def test_quick_form_rejects_a_camera_without_name(capsys):
    assert cli(["run", "--camera", "rtsp://u:pw@h/1", "--model", "m.onnx"]) == 2
    err = capsys.readouterr().err
    assert "--camera: expected NAME=URL" in err and "pw" not in err


def test_run_with_metrics_port_taken_is_one_error_line(tmp_path, capsys, tiny_model):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = {
            "cameras": [{"name": "door", "url": str(tmp_path / "absent.mp4")}],
            "models": {"m": {"path": str(tiny_model)}},
            "metrics": {"host": "127.0.0.1", "port": port},
        }
        assert cli(["run", "-c", str(_write(tmp_path, data))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "in use" in err.lower()


def test_username_and_password_go_into_the_url_encoded():
    config = parse_config(_base(url="rtsp://h:554/s", username="ad min", password="p@ss/w#rd?%"))
    assert config.cameras[0].stream_url() == "rtsp://ad%20min:p%40ss%2Fw%23rd%3F%25@h:554/s"
    assert "p@ss" not in repr(config)


@pytest.mark.parametrize(
    ("camera", "message"),
    [
        ({"username": "u", "password": "p"}, "has user info already"),  # _base's url carries u:pw@
        ({"url": "rtsp://h/s", "password": "p"}, "password is set without username"),
        ({"url": "/videos/a.mp4", "username": "u"}, "need a network URL"),
    ],
)
def test_username_and_password_mistakes_are_one_clear_error(camera, message):
    with pytest.raises(ConfigError, match=message) as error:
        parse_config(_base(**camera))
    assert "cameras.0" in str(error.value) and "pw" not in str(error.value)
