"""``actionstream infer --region --mask --zones``: what a camera's keys do live, offline; ``--annotate`` draws them.

Person models run on a real clip (a bright figure walking across a dark hall, tests/videos.py) with a detector that
finds it from the decoded pixels (tests/person_graphs.py); clip models are the bundled demo model.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from agent.cli import main
from agent.config import ModelConfig
from agent.frames import Converter
from agent.live.runtime import ModelRuntime
from agent.offline.video import frame_times, read_clips
from tests.person_graphs import box_scorer, bright_object_detector
from tests.videos import pattern_video, walking_figure

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "models" / "motion_demo.onnx"
ZONES = "{left: [[0, 0.5], [0.5, 0.5], [0.5, 1], [0, 1]], right: [[0.5, 0.5], [1, 0.5], [1, 1], [0.5, 1]]}"
MASK = "[[0, 0], [0.4, 0], [0.4, 0.25], [0, 0.25]]"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def hall(tmp_path_factory):
    return walking_figure(tmp_path_factory.mktemp("hall") / "hall.mp4")


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    work = tmp_path_factory.mktemp("people")
    model = box_scorer(work / "walk.onnx", ["walk"], np.zeros((4, 1)), np.array([10.0]), size=96)
    return model, bright_object_detector(work / "bright.onnx")


def infer_people(tmp_path, hall, people, *flags: str) -> list[dict]:
    model, detector = people
    out = tmp_path / "people.json"
    argv = ["infer", str(hall), "--model", str(model), "--detector", str(detector), "--every", "1", "--device", "cpu"]
    assert main([*argv, *flags, "--json", str(out)]) == 0
    return json.loads(out.read_text())["key_times"]


def figure_x(t: float) -> float:
    """The figure's left edge at time t, normalised (tests/videos.py)."""
    return (20 + 100 * (1 - np.cos(np.pi * t / 4))) / 320


def test_person_boxes_are_in_the_whole_frame_with_the_zones_their_feet_are_in(tmp_path, hall, people):
    whole = infer_people(tmp_path, hall, people, "--zones", ZONES)
    cut = infer_people(tmp_path, hall, people, "--zones", ZONES, "--region", "0,0.3,1,1")
    assert [k["time"] for k in whole] == [k["time"] for k in cut] == [float(t) for t in range(8)]
    for a, b in zip(whole, cut, strict=True):
        (p,), (q,) = a["people"], b["people"]
        t = a["time"]
        assert p["box"] == pytest.approx([figure_x(t), 0.5, figure_x(t) + 0.2, 0.9], abs=0.02)
        assert q["box"] == pytest.approx(p["box"], abs=0.02)  # the region's box, back in the whole frame
        feet = (p["box"][0] + p["box"][2]) / 2
        assert p["zones"] == q["zones"] == (["left"] if feet < 0.5 else ["right"])
    assert [k["people"][0]["zones"] for k in whole] == [["left"]] * 3 + [["right"]] * 3 + [["left"]] * 2
    assert "zones" not in infer_people(tmp_path, hall, people)[0]["people"][0]  # without --zones: no zones


def test_a_mask_hides_a_person_from_the_detector_and_a_region_leaves_them_out(tmp_path, hall, people):
    """The left half masked, the detector sees only what of the figure is on the right; a region of the right part
    of the frame, likewise (its boxes back in the whole frame)."""
    for flag, value, edge in [
        ("--mask", "[[0, 0], [0.5, 0], [0.5, 1], [0, 1]]", 0.5),
        ("--region", "0.55,0,1,1", 0.55),
    ]:
        found = infer_people(tmp_path, hall, people, flag, value)
        seen = [float(t) for t in range(8) if figure_x(t) + 0.2 > edge + 0.01]
        assert [k["time"] for k in found if k["people"]] == seen == [2.0, 3.0, 4.0, 5.0, 6.0]
        for k in found:
            for p in k["people"]:
                assert p["box"][0] == pytest.approx(max(edge, figure_x(k["time"])), abs=0.02)


def test_a_clip_model_sees_the_region_with_the_mask_filled(tmp_path):
    video = pattern_video(tmp_path / "pattern.mp4", 4, "320x240", 15, "testsrc2")
    out = tmp_path / "scores.json"
    flags = ["--region", "[0.25, 0.2, 0.9, 1.0]", "--mask", MASK, "--every", "1", "--top-k", "9", "--device", "cpu"]
    assert main(["infer", str(video), "--model", str(DEMO), *flags, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    runtime = ModelRuntime("m", ModelConfig(path=DEMO, device="cpu"))
    mask = json.loads(MASK)
    converter = Converter(runtime.spec, region=(0.25, 0.2, 0.9, 1.0), mask=[mask])
    times = frame_times(video)  # the windows infer takes (the report's times are rounded)
    ends = [float(e) for e in np.arange(times.min() + runtime.spec.span_s, times.max() + 1e-6, 1.0)]
    windows = read_clips(video, runtime.spec, ends, converter)
    scores = runtime.infer({"clip": np.stack([w.inputs["clip"] for w in windows])})
    for window, row in zip(report["timeline"], scores, strict=True):
        got = dict(window["top"])
        assert [got[label] for label in runtime.spec.labels] == pytest.approx(row.tolist(), abs=1e-5)
    plain = read_clips(video, runtime.spec, ends[:1])[0].inputs["clip"]
    assert not np.array_equal(windows[0].inputs["clip"], plain)


def test_annotate_draws_the_region_the_mask_and_the_zones(tmp_path, hall, people):
    model, detector = people
    annotated = tmp_path / "drawn.mp4"
    flags = ["--detector", str(detector), "--every", "1", "--device", "cpu", "--annotate", str(annotated)]
    region = "0.1,0.2,0.9,0.95"
    assert main(["infer", str(hall), "--model", str(model), *flags, "--region", region, "--mask", MASK,
                 "--zones", ZONES]) == 0  # fmt: skip
    with av.open(str(annotated)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    h, w = frame.shape[:2]

    def near(y: float, x: float, colour, tolerance=60) -> bool:
        """Some pixel within 2 px of (x, y) has about this colour (lines are thin; H.264 smears their chroma)."""
        r, c = round(y * h), round(x * w)
        return bool((np.abs(frame[r - 2 : r + 3, c - 2 : c + 3] - colour).max(axis=-1) < tolerance).any())

    assert near(0.2, 0.5, (255, 210, 0), 110)  # the region's top edge, yellow
    assert near(0.58, 0.95, (0x20 * 110 // 256,) * 3, 12)  # outside the region: the dark floor dimmed
    assert near(0.1, 0.2, (124, 116, 104), 40) or near(0.1, 0.2, (60, 60, 60), 40)  # the mask: grey, hatched
    assert near(0.75, 0.5, (64, 255, 160)) or near(0.75, 0.5, (255, 120, 255))  # the zones' shared edge


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--region", "0.5,0.2,0.4,0.9"], "error: --region: [0.5, 0.2, 0.4, 0.9] is not [x1, y1, x2, y2]"),
        (["--region", "0.1,0.2,left,0.9"], "error: --region: expected x1,y1,x2,y2 (numbers)"),
        (["--mask", "[[0, 0], [1, 1]]"], "error: --mask: polygon 0: a polygon needs at least 3 vertices"),
        (["--zones", "{door: [[0, 0], [1, 0]]}"], "error: --zones: zone 'door': a polygon needs at least 3"),
        (["--zones", ZONES], "error: --zones: zones need a person model (task: person)"),
    ],
)
def test_bad_flags_are_one_clear_error(tmp_path, flags, message, capsys):
    video = pattern_video(tmp_path / "pattern.mp4", 1, "160x120", 15, "testsrc2")
    assert main(["infer", str(video), "--model", str(DEMO), "--device", "cpu", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
