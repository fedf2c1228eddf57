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


# -- regions, masks, zones; entries that share a stream ---------------------------------------------------------------

SQUARE = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4], [0.1, 0.4]]


def test_region_mask_and_zones_are_read_normalised():
    config = parse_config(_base(region=[0.1, 0.2, 0.6, 0.9], mask=SQUARE, zones={"door": SQUARE, "bench": SQUARE}))
    camera = config.cameras[0]
    assert camera.region == (0.1, 0.2, 0.6, 0.9)
    assert camera.mask == [[tuple(p) for p in SQUARE]]  # one polygon is a list of one
    assert parse_config(_base(mask=[SQUARE, SQUARE])).cameras[0].mask == [[tuple(p) for p in SQUARE]] * 2
    assert list(camera.zones) == ["door", "bench"]
    plain = parse_config(_base()).cameras[0]
    assert (plain.region, plain.mask, plain.zones) == (None, [], {})


@pytest.mark.parametrize(
    ("camera", "expected"),
    [
        ({"region": [0.5, 0.2, 0.4, 0.9]}, "cameras.0.region: [0.5, 0.2, 0.4, 0.9] is not [x1, y1, x2, y2] with 0 <= "),
        ({"region": [0.1, 0.2, 0.6, 1.2]}, "cameras.0.region: [0.1, 0.2, 0.6, 1.2] is not [x1, y1, x2, y2]"),
        ({"region": [0.1, 0.2, 0.6, 0.2]}, "cameras.0.region"),  # no area
        ({"region": [0.1, 0.2, 0.6]}, "cameras.0.region: expected [x1, y1, x2, y2] (4 numbers), got 3"),
        ({"region": "left half"}, "cameras.0.region"),
        ({"mask": [[0, 0], [1, 1]]}, "cameras.0.mask: polygon 0: a polygon needs at least 3 vertices"),
        ({"mask": [SQUARE, [[0, 0], [0.5, 0.5], [1, 1]]]}, "cameras.0.mask: polygon 1: the polygon"),
        ({"mask": [[0, 0], [1.5, 0], [1, 1]]}, "cameras.0.mask: polygon 0: vertices outside [0, 1]"),
        ({"zones": {"door": [[0, 0], [1, 0]]}}, "cameras.0.zones: zone 'door': a polygon needs at least 3"),
        ({"zones": {"front door": SQUARE}}, "cameras.0.zones: zone name 'front door' must match"),
        ({"zones": {"door": SQUARE}, "events": {"zones": ["gate"]}}, "its events.zones names zones it does not"),
    ],
)
def test_bad_regions_masks_and_zones_name_the_key(camera, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(_base(**camera), "site.yaml")
    assert expected in str(e.value) and "pw@" not in str(e.value)


def test_events_zones_at_the_top_level_must_be_every_cameras():
    data = _base(zones={"door": SQUARE})
    data["events"] = {"zones": ["door"]}
    assert parse_config(data).events_of(parse_config(data).cameras[0]).zones == ["door"]
    data["cameras"].append({"name": "yard", "url": "rtsp://h/yard"})
    with pytest.raises(ConfigError, match=r"camera 'yard': events.zones names zones it does not have: \['door'\]"):
        parse_config(data)


def _two(door: dict, yard: dict, url: str = "rtsp://u:pw@h/s") -> dict:
    return {
        "cameras": [{"name": "door", "url": url, **door}, {"name": "yard", "url": url, **yard}],
        "models": {"m": {"path": "m.onnx"}},
    }


def test_entries_that_name_one_stream_share_its_settings():
    config = parse_config(
        _two({"transport": "udp", "region": [0, 0, 0.5, 1], "every_s": 0.5}, {"stall_s": 4, "region": [0.5, 0, 1, 1]})
    )
    door, yard = config.cameras
    assert (door.transport, door.stall_s, yard.transport, yard.stall_s) == ("udp", 4, "udp", 4)
    assert (door.every_s, yard.every_s) == (0.5, 1.0) and door.region != yard.region  # the entries' own
    assert [c.name for c in config.stream_of(yard)] == ["door", "yard"]
    assert [[c.name for c in group] for group in config.streams().values()] == [["door", "yard"]]
    # the same URL through username/password is the same stream
    same = _two({}, {"url": "rtsp://h/s", "username": "u", "password": "pw"})
    assert len(parse_config(same).streams()) == 1


@pytest.mark.parametrize(
    ("door", "yard", "message"),
    [
        (
            {"transport": "tcp"},
            {"transport": "udp"},
            "share the stream rtsp://u:***@h/s but set `transport` differently",
        ),
        ({"hwaccel": "cuda"}, {"hwaccel": "off"}, "set `hwaccel` differently ('cuda', 'off')"),
        ({"read_timeout_s": 3}, {"read_timeout_s": 4}, "`read_timeout_s`"),
        ({"record_url": "rtsp://u:pw@h/main"}, {"record_url": "rtsp://u:pw@h/other"}, "(rtsp://u:***@h/main, rtsp://"),
        ({}, {"url": "rtsp://h/s", "username": "u", "password": "other"}, "with different credentials"),
    ],
)
def test_entries_that_name_one_stream_with_conflicting_settings_are_an_error(door, yard, message):
    with pytest.raises(ConfigError) as e:
        parse_config(_two(door, yard), "site.yaml")
    text = str(e.value)
    assert text.startswith("site.yaml: cameras: ") and "'door'" in text and "'yard'" in text and message in text
    assert ":pw@" not in text and ":other@" not in text  # passwords never shown


def test_check_shows_regions_masks_zones_and_shared_streams(tmp_path, capsys, tiny_model):
    data = _two({"region": [0, 0, 0.5, 1], "mask": [SQUARE, SQUARE]}, {"region": [0.5, 0, 1, 1]})
    data["models"]["m"]["path"] = str(tiny_model)
    assert cli(["check", "-c", str(_write(tmp_path, data)), "--shards", "3"]) == 0
    out = capsys.readouterr().out
    assert "    region [0, 0, 0.5, 1] of the frame\n    mask: 2 polygons, model's mean colour\n" in out
    assert "    stream shared with yard (one connection, decoded once)" in out
    assert "    stream shared with door (one connection, decoded once)" in out
    shards = [line for line in out.splitlines() if line.startswith("  shard ")]
    assert sum("door, yard" in line for line in shards) == 1  # a stream's entries go to one shard


def test_zones_need_a_person_model(tmp_path, capsys, tiny_model):
    data = _base(zones={"door": SQUARE})
    data["models"]["m"]["path"] = str(tiny_model)
    assert cli(["check", "-c", str(_write(tmp_path, data))]) == 2
    err = capsys.readouterr().err
    assert "camera 'dock1': zones need a person model (task: person)" in err and err.count("\n") == 1


def test_a_streams_entries_run_on_one_shard():
    from agent.cli import _shard

    names = [f"cam{i}" for i in range(12)]
    cameras = [{"name": n, "url": f"rtsp://h/{i // 3}"} for i, n in enumerate(names)]  # four streams of three
    config = parse_config({"cameras": cameras, "models": {"m": {"path": "m.onnx"}}})
    kept = [[c.name for c in _shard(config, f"{i}/3")[0].cameras] for i in range(3)]
    assert sorted(n for shard in kept for n in shard) == sorted(names)
    for shard in kept:
        streams = {int(n[3:]) // 3 for n in shard}
        assert sorted(shard, key=lambda n: int(n[3:])) == [
            f"cam{i}" for s in sorted(streams) for i in range(3 * s, 3 * s + 3)
        ]
