"""agent.config for flow models and two-stream cameras: ``cameras[].fusion`` and ``models.NAME.flow_method``."""

from __future__ import annotations

import re

import pytest

from agent.config import parse_config
from agent.errors import ConfigError


def data(**camera) -> dict:
    cam = {"name": "door", "url": "door.mp4", "fusion": {"models": {"rgb": 1.0, "flow": 1.5}}} | camera
    return {"cameras": [cam], "models": {"rgb": {"path": "rgb.onnx"}, "flow": {"path": "flow.onnx"}}}


def test_a_fused_camera_feeds_its_models_in_order():
    config = parse_config(data())
    (camera,) = config.cameras
    assert camera.fusion is not None and camera.fusion.models == {"rgb": 1.0, "flow": 1.5}
    assert config.models_of(camera) == ["rgb", "flow"] and config.model_of(camera) == "rgb"
    single = parse_config(data(fusion=None, model="flow"))
    assert single.models_of(single.cameras[0]) == ["flow"] and single.model_of(single.cameras[0]) == "flow"


@pytest.mark.parametrize(
    ("camera", "needle"),
    [
        ({"model": "rgb"}, "camera 'door': set `model` or `fusion`, not both"),
        ({"fusion": {"models": {"rgb": 1.0, "nope": 1.0}}}, "fusion model(s) 'nope' not in `models` (rgb, flow)"),
        ({"fusion": {"models": {"rgb": 1.0}}}, "cameras.0.fusion.models"),
        ({"fusion": {"models": {"rgb": 0.0, "flow": 0.0}}}, "weights must be >= 0 with a positive sum"),
        ({"fusion": {"models": {"rgb": -1.0, "flow": 2.0}}}, "weights must be >= 0"),
        ({"fusion": {"models": {"rgb": 1, "flow": 1}, "mode": "max"}}, "cameras.0.fusion.mode: unknown key"),
        ({"fusion": None}, "set `model` (several models are configured)"),
    ],
)
def test_fusion_settings_are_checked(camera, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        parse_config(data(**camera))


def test_flow_method_is_one_of_the_methods():
    config = data()
    config["models"]["flow"]["flow_method"] = "dis"
    assert parse_config(config).models["flow"].flow_method == "dis"
    assert parse_config(data()).models["flow"].flow_method is None  # the spec's
    config["models"]["flow"]["flow_method"] = "raft"
    with pytest.raises(ConfigError, match=r"models\.flow\.flow_method"):
        parse_config(config)
