"""Two-stream cameras (``cameras[].fusion``): one stream feeds an RGB and a flow model, their scores are fused into
one event tracker; the flow is computed in the camera's flow thread and its cost shows in the metrics; ``check``
describes it and refuses what ``run`` would. (Offline: tests/agent/offline/test_infer_fusion.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from agent.config import parse_config
from agent.errors import ConfigError
from agent.fusion import Fusion
from agent.live.app import Agent
from agent.live.batcher import Scored
from agent.live.clips import Clip
from agent.live.events import EventTracker
from agent.live.pipelines import FusedScoring, Work
from agent.metrics import Metrics
from tests.agent.live.test_app import Sink
from tests.agent.two_stream import LABELS, two_stream_models
from tests.agent.two_stream import motion_video as make_video

pytest.importorskip("cv2")

# Every fused row gives an event: the first label always starts, never ends, updates are due at once.
EVERY_ROW = {"threshold": 1e-9, "end_threshold": 0.0, "min_hits": 1, "update_s": 1e-9, "include": ["move_left"]}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return two_stream_models(tmp_path_factory.mktemp("two-stream"))


@pytest.fixture(scope="module")
def motion_video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("video"))


def config(models, video, *, realtime: bool, weights=None, **camera) -> dict:
    weights = weights or {"rgb": 1.0, "flow": 1.5}
    cam = {"name": "door", "url": str(video), "realtime": realtime, "every_s": 0.5, "fusion": {"models": weights}}
    return {
        "cameras": [cam | camera],
        "models": {name: {"path": str(path), "device": "cpu"} for name, path in models.items()},
        "metrics": {"enabled": False},
        "events": EVERY_ROW,
    }


def run(data: dict, seconds: float | None = None) -> tuple[list, Metrics]:
    metrics, sink = Metrics(), Sink()
    agent = Agent(parse_config(data), metrics=metrics, sink=sink)

    async def main():
        stop = asyncio.Event()
        if seconds is not None:
            asyncio.get_running_loop().call_later(seconds, stop.set)
        await asyncio.wait_for(agent.run(stop), 120)

    asyncio.run(main())
    return sink.events, metrics


@pytest.mark.parametrize("realtime", [False, True], ids=["paced", "real-time"])
def test_a_file_camera_feeds_both_models_and_publishes_fused_events(models, motion_video, realtime):
    events, metrics = run(config(models, motion_video, realtime=realtime), seconds=None if not realtime else 6.0)
    scored = [e for e in events if e.type != "end"]
    assert scored and all(e.model == "rgb+flow" and e.camera == "door" for e in events)
    assert len(scored) >= (3 if not realtime else 2)  # a clip every 0.5 s once a span (~1.2 s) is in
    for model in ("rgb", "flow"):
        assert metrics.value("actionstream_clips_inferred_total", model=model) >= len(scored)
    fields = metrics.value("actionstream_flow_seconds_count", camera="door", method="farneback")
    assert fields >= 4 * 5  # 4 segments × 5 fields for the first clip, the next share some
    assert metrics.value("actionstream_flow_seconds_sum", camera="door", method="farneback") > 0
    assert metrics.value("actionstream_frames_sampled_total", camera="door") > 0


def test_the_flow_method_can_be_overridden_per_model(models, motion_video):
    data = config(models, motion_video, realtime=False)
    data["models"]["flow"]["flow_method"] = "dis"
    events, metrics = run(data)
    assert [e for e in events if e.type != "end"]
    assert metrics.value("actionstream_flow_seconds_count", camera="door", method="dis") > 0
    assert metrics.value("actionstream_flow_seconds_count", camera="door", method="farneback") == 0


def test_a_flow_model_alone_runs_live_too(models, motion_video):
    data = config(models, motion_video, realtime=False)
    data["cameras"][0].pop("fusion")
    data["cameras"][0]["model"] = "flow"
    events, metrics = run(data)
    assert [e for e in events if e.type != "end"] and all(e.model == "flow" for e in events)
    assert metrics.value("actionstream_flow_seconds_count", camera="door", method="farneback") > 0


def test_models_with_other_labels_cannot_be_fused(models, motion_video):
    data = config(models, motion_video, realtime=False, weights={"rgb": 1.0, "other": 1.0})
    agent = Agent(parse_config(data), metrics=Metrics(), sink=Sink())
    with pytest.raises(ConfigError) as err:
        agent.load()
    message = str(err.value)
    assert message.startswith("camera door: fusion: models rgb and other must have the same labels")
    assert "only rgb has 'move_left', 'move_right'" in message and "only other has 'run', 'walk'" in message


@pytest.mark.parametrize("camera", [{}, {"fusion": None, "model": "flow"}], ids=["fused", "flow alone"])
def test_the_conversion_graph_is_refused_for_fused_cameras_and_flow_models(models, motion_video, camera):
    data = config(models, motion_video, realtime=False, convert="graph")
    data["cameras"][0] |= camera
    if not data["cameras"][0]["fusion"]:
        del data["cameras"][0]["fusion"]
    agent = Agent(parse_config(data), metrics=Metrics(), sink=Sink())
    with pytest.raises(ConfigError) as err:
        agent.load()
    what = "fuses several models" if camera == {} else "feeds flow model 'flow'"
    assert str(err.value) == (
        f"camera 'door': convert: graph converts frames for one RGB model, and this camera {what}: "
        "remove `convert` (or set it to cpu)"
    )
    data["cameras"][0]["convert"] = "cpu"  # the same camera converting on the CPU loads
    Agent(parse_config(data), metrics=Metrics(), sink=Sink()).load()


def clip(model: str, end: float, span: float = 1.0) -> Clip:
    return Clip("door", 1, {}, end - span, end, 1000.0 + end, received_mono=end, model=model)


def test_a_round_fuses_once_every_model_has_scored_since_the_last():
    fusion = Fusion({"rgb": 1.0, "flow": 3.0}, {"rgb": LABELS, "flow": LABELS})
    tracker = EventTracker(camera="door", model="rgb+flow", labels=LABELS, config=parse_config(
        {"cameras": [{"name": "x", "url": "x.mp4"}], "models": {"m": {"path": "m.onnx"}}, "events": EVERY_ROW}
    ).events, run="r")  # fmt: skip
    scoring = FusedScoring({"rgb": None, "flow": None}, fusion, tracker, live=True)  # type: ignore[dict-item]
    rgb, flow = np.array([0.8, 0.1, 0.1], np.float32), np.array([0.2, 0.4, 0.4], np.float32)

    def apply(model, end, scores):
        return scoring.apply(Work(clip(model, end), None), Scored(scores, 5.0))  # type: ignore[arg-type]

    assert apply("rgb", 2.0, rgb) == []  # the flow model has not scored yet
    assert apply("rgb", 2.5, rgb) == []  # a newer RGB row replaces the first
    (event,) = apply("flow", 2.6, flow)
    assert event.score == pytest.approx((0.8 + 3 * 0.2) / 4)  # the weighted average of move_left
    assert event.received_at == pytest.approx(1000.0 + 2.6)  # received with the newest clip's frame
    assert event.clip_end - event.clip_start == pytest.approx(2.6 - 1.5)  # from RGB's start to flow's end
    assert apply("flow", 3.1, flow) == []  # a new round: waits for RGB again
    assert apply("rgb", 9.0, rgb) == []  # RGB's clip starts after flow's ended: not the same moment
    assert apply("flow", 9.1, flow)  # the next flow clip completes the round with it


def test_check_describes_a_fused_camera_and_refuses_what_run_would(models, motion_video, tmp_path, capsys):
    import yaml

    from agent.cli import main

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config(models, motion_video, realtime=False), sort_keys=False))
    assert main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "→ models rgb × 1, flow × 1.5 (fused), every 0.5 s" in out
    assert "of farneback flow" in out
    path.write_text(
        yaml.safe_dump(config(models, motion_video, realtime=False, weights={"rgb": 1, "other": 1}), sort_keys=False)
    )
    assert main(["check", "-c", str(path)]) == 2
    assert "camera door: fusion: models rgb and other must have the same labels" in capsys.readouterr().err
