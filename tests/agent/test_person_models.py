"""Person models through the product: ``infer`` with a proposals file or a detector, ``run`` against mosquitto
with a constant-box detector, and the configuration errors around them.

The person model here is a small graph whose scores are a known function of each box (tests/person_graphs.py):
"left" is high for a box on the left half, "right" for one on the right, "tall" never.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import av
import numpy as np
import pytest
import yaml

from agent.cli import main
from tests.mosquitto import Mosquitto, Subscriber
from tests.person_graphs import box_scorer, constant_detector
from tests.videos import pattern_video

LABELS = ["left", "right", "tall"]
W = np.array([[-20.0, 20.0, 0.0], [0, 0, 0], [-20.0, 20.0, 0.0], [0, 0, 0]])  # x1 + x2: box centre × 2
B = np.array([14.0, -10.0, -5.0])
LEFT, RIGHT = (0.05, 0.1, 0.35, 0.9), (0.6, 0.2, 0.9, 0.95)


def expected(box) -> np.ndarray:
    return 1 / (1 + np.exp(-(np.asarray(box) @ W + B)))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return pattern_video(tmp_path_factory.mktemp("video") / "walk.mp4", 3, options=["-g", "25"])


@pytest.fixture(scope="module")
def person_model(tmp_path_factory):
    return box_scorer(tmp_path_factory.mktemp("model") / "people.onnx", LABELS, W, B, frames=4, stride_s=0.2)


def test_infer_with_a_proposals_file(tmp_path, video, person_model):
    proposals = tmp_path / "proposals.json"
    proposals.write_text(
        json.dumps(
            [
                {"time": 1.0, "boxes": [list(LEFT), list(RIGHT)]},
                {"time": 2.0, "boxes": [[0.62, 0.2, 0.92, 0.95], [0.06, 0.1, 0.36, 0.9]]},  # listed the other way
                {"time": 9.0, "boxes": [list(LEFT)]},  # after the end of the video: skipped
            ]
        )
    )
    out, annotated = tmp_path / "people.json", tmp_path / "people.mp4"
    argv = ["infer", str(video), "--model", str(person_model), "--proposals", str(proposals)]
    assert main([*argv, "--json", str(out), "--annotate", str(annotated), "--top-k", "3"]) == 0
    report = json.loads(out.read_text())
    assert [k["time"] for k in report["key_times"]] == [1.0, 2.0]
    first, second = (k["people"] for k in report["key_times"])
    assert [p["id"] for p in first] == [1, 2] and [p["id"] for p in second] == [2, 1]  # ids follow the people
    assert first[0]["top"][0][0] == "left" and first[1]["top"][0][0] == "right"
    for person in first + second:
        scores = dict(person["top"])
        want = expected(person["box"])
        assert [scores[label] for label in LABELS] == pytest.approx(want, abs=1e-4)

    with av.open(str(annotated)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 75
    x = round(LEFT[0] * 320)
    column = frames[40][round(0.3 * 240) : round(0.8 * 240), x].astype(int)  # after key time 1.0: box drawn
    assert np.abs(column - [255, 64, 64]).max(axis=1).mean() < 40
    before = frames[10][round(0.3 * 240) : round(0.8 * 240), x].astype(int)  # before the first key time
    assert np.abs(before - [255, 64, 64]).max(axis=1).mean() > 40


def test_infer_with_a_detector(tmp_path, video, person_model):
    detector = constant_detector(tmp_path / "det.onnx", [[16, 24, 112, 216]], [0.9], [1], size=(240, 320))
    out = tmp_path / "people.json"
    argv = ["infer", str(video), "--model", str(person_model), "--detector", str(detector), "--every", "1"]
    assert main([*argv, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [k["time"] for k in report["key_times"]] == [0.0, 1.0, 2.0]
    boxes = [p["box"] for k in report["key_times"] for p in k["people"]]
    assert boxes == [[0.05, 0.1, 0.35, 0.9]] * 3
    assert {p["id"] for k in report["key_times"] for p in k["people"]} == {1}


def test_infer_person_model_without_people_is_one_clear_error(video, person_model, capsys):
    assert main(["infer", str(video), "--model", str(person_model)]) == 2
    assert "give --proposals FILE or --detector DET.onnx" in capsys.readouterr().err


def config_for(tmp_path, video, model, detector=None, mqtt=None) -> dict:
    camera = {"name": "hall", "url": str(video), "loop": True, "every_s": 0.4}
    config = {
        "cameras": [camera],
        "models": {"people": {"path": str(model)} | ({"detector": {"path": str(detector)}} if detector else {})},
        "metrics": {"enabled": False},
        "events": {"threshold": 0.9, "end_threshold": 0.5, "min_hits": 1},
    }
    if mqtt:
        config["mqtt"] = {"url": mqtt}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return config


def test_a_person_model_needs_a_detector_and_a_clip_model_takes_none(tmp_path, video, person_model, tiny_model):
    config_for(tmp_path, video, person_model)
    result = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(tmp_path / "config.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "models.people.detector:" in result.stderr and "is a person model" in result.stderr
    detector = constant_detector(tmp_path / "det.onnx", [[0, 0, 10, 10]], [0.9], [1])
    config_for(tmp_path, video, tiny_model, detector)
    result = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(tmp_path / "config.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 2 and "is not a person model; remove the detector" in result.stderr


def test_run_publishes_per_person_events(tmp_path, video, person_model):
    """A constant-box detector (two people) drives the agent end to end against a real broker."""
    detector = constant_detector(
        tmp_path / "det.onnx", [[16, 24, 112, 216], [192, 48, 288, 228]], [0.9, 0.8], [1, 1], size=(240, 320)
    )
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker, "actionstream/#").start()
    config_for(tmp_path, video, person_model, detector, mqtt=broker.url)
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "-c", str(tmp_path / "config.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        on = {"actionstream/hall/left", "actionstream/hall/right"}
        subscriber.wait_for(lambda ms: on <= {m.topic for m in ms if m.payload == "ON"}, timeout=60)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            _, stderr = agent.communicate(timeout=30)
        finally:
            agent.kill()
    assert agent.returncode == 0, stderr[-3000:]
    final = subscriber.wait_for(lambda ms: subscriber.payloads("actionstream/available")[-1:] == ["offline"])
    subscriber.stop()
    broker.stop()
    events = [json.loads(m.payload) for m in final if m.topic == "actionstream/hall/events"]
    by_person = {}
    for e in events:
        by_person.setdefault((e["person"], e["label"]), []).append(e["type"])
    assert by_person == {(1, "left"): ["start", "end"], (2, "right"): ["start", "end"]}
    assert {e["person"]: e["box"] for e in events} == {1: [0.05, 0.1, 0.35, 0.9], 2: [0.6, 0.2, 0.9, 0.95]}
    assert len({e["id"] for e in events}) == len(events)
    assert subscriber.payloads("actionstream/hall/left")[-1] == "OFF"
    assert subscriber.payloads("actionstream/hall/tall") == ["OFF"]  # never started: only the OFF of the start


def test_check_opens_the_detector(tmp_path, video, person_model, capsys):
    detector = constant_detector(tmp_path / "det.onnx", [[0, 0, 10, 10]], [0.9], [0], layout="yolo")
    config_for(tmp_path, video, person_model, detector)
    assert main(["check", "-c", str(tmp_path / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"person detector: {detector} (yolo outputs, class 0)" in out
    config_for(tmp_path, video, person_model)
    assert main(["check", "-c", str(tmp_path / "config.yaml")]) == 2
    assert "models.people.detector:" in capsys.readouterr().err


def test_infer_with_an_exported_ava_model_on_the_ava_demo(tmp_path, shared_data):
    """The real path: export/to_onnx.py's AVA SlowOnly (small, random weights) → infer with proposals on the
    spatio-temporal demo clip; 60 AVA labels per box, independent probabilities."""
    from export import to_onnx

    label_map = shared_data / "mmaction2/tools/data/ava/label_map.txt"
    model = tmp_path / "ava.onnx"
    argv = ["--arch", "ava_slowonly_r50_4x16", "--depth", "18", "--width", "8", "--size", "64"]
    assert to_onnx.main([*argv, "--labels", str(label_map), "--out", str(model)]) == 0
    proposals = tmp_path / "p.json"
    proposals.write_text(json.dumps([{"time": 2.5, "boxes": [[0.1, 0.1, 0.4, 0.9], [0.5, 0.2, 0.9, 0.95, 0.7]]}]))
    out = tmp_path / "r.json"
    video = shared_data / "mmaction2/demo/demo_spatiotemporal_det.mp4"
    assert main(["infer", str(video), "--model", str(model), "--proposals", str(proposals), "--json", str(out)]) == 0
    (key,) = json.loads(out.read_text())["key_times"]
    assert key["time"] == 2.5 and [p["id"] for p in key["people"]] == [1, 2]
    names = {line.split(": ", 1)[1] for line in label_map.read_text().splitlines() if line.strip()}
    for person in key["people"]:
        assert len(person["top"]) == 5 and {label for label, _ in person["top"]} <= names
        assert all(0 < score < 1 for _, score in person["top"])
    assert key["people"][0]["top"] != key["people"][1]["top"]  # each box is scored on its own
