"""``actionstream infer`` with several models (two-stream: RGB and flow): each model's own clips of the same windows,
their scores fused as the agent fuses a camera's; a flow model's flow made another way (``--flow-method``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ModelConfig
from agent.live.runtime import ModelRuntime
from agent.offline.infer import _scores
from agent.offline.video import frame_times
from tests.agent.two_stream import LABELS, two_stream_models
from tests.agent.two_stream import motion_video as make_video

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return two_stream_models(tmp_path_factory.mktemp("two-stream"))


@pytest.fixture(scope="module")
def motion_video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("video"))


def test_infer_fuses_the_same_windows_offline(models, motion_video, tmp_path, capsys):
    reports = {}
    for name, argv in {
        "rgb": ["--model", str(models["rgb"])],
        "flow": ["--model", str(models["flow"])],
        "fused": ["--model", str(models["rgb"]), "--model", str(models["flow"]), "--weights", "1", "1.5"],
    }.items():
        out = tmp_path / f"{name}.json"
        assert main(["infer", str(motion_video), *argv, "--every", "0.5", "--top-k", "3", "--json", str(out)]) == 0
        reports[name] = json.loads(out.read_text())
    fused = reports["fused"]
    assert fused["model"] == [str(models["rgb"]), str(models["flow"])] and fused["weights"] == [1.0, 1.5]
    assert fused["arch"] == "tsn_r50+tsn_r50_flow"
    assert "fused: 1 x tsn_r50.onnx + 1.5 x tsn_r50_flow.onnx" in capsys.readouterr().out
    ends = [w["end"] for w in fused["timeline"]]
    assert ends == [w["end"] for w in reports["flow"]["timeline"]]  # the longer span sets the windows
    args = argparse.Namespace(video=str(motion_video), flow_method=None)
    times = frame_times(motion_video)
    alone = {
        m: dict(
            zip(*_scores(args, ModelRuntime(m, ModelConfig(path=models[m], device="cpu")), ends, times), strict=True)
        )
        for m in ("rgb", "flow")
    }  # each model's own scores for exactly those windows
    for window in fused["timeline"]:
        end = next(e for e in alone["rgb"] if abs(e - window["end"]) < 1e-3)
        for label, score in window["top"]:
            k = LABELS.index(label)
            expected = (alone["rgb"][end][k] + 1.5 * alone["flow"][end][k]) / 2.5
            assert score == pytest.approx(expected, abs=1e-6)
    argv = ["infer", str(motion_video), "--model", str(models["rgb"]), "--model", str(models["other"])]
    assert main(argv) == 2
    assert "must have the same labels" in capsys.readouterr().err


def test_infer_runs_a_flow_model_with_another_method(models, motion_video, tmp_path):
    out = tmp_path / "dis.json"
    argv = ["infer", str(motion_video), "--model", str(models["flow"]), "--flow-method", "dis", "--json", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["timeline"]
