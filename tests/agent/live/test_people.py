"""Person detectors in both accepted output layouts, and the IoU tracker that gives people stable ids."""

from __future__ import annotations

import numpy as np
import pytest

from agent.config import DetectorConfig
from agent.live.people import IouTracker, PersonDetector, iou
from agent.spec import SpecError
from tests.person_graphs import constant_detector

BOXES = [[10, 20, 50, 90], [60, 10, 90, 40], [0, 0, 5, 5], [20, 20, 80, 80]]
SCORES = [0.9, 0.8, 0.95, 0.3]


def detector(tmp_path, *, classes, threshold=0.5, max_people=16, person_class=None, **graph) -> PersonDetector:
    path = constant_detector(tmp_path / "det.onnx", BOXES, SCORES, classes, **graph)
    config = DetectorConfig(path=path, score_threshold=threshold, max_people=max_people, person_class=person_class)
    return PersonDetector(config)


def test_torchvision_layout_keeps_confident_people_normalised_best_first(tmp_path):
    det = detector(tmp_path, classes=[1, 1, 3, 1])  # COCO with background: person = 1
    assert det.layout == "torchvision" and det.fixed_hw is None
    found = det.detect(np.zeros((100, 200, 3), np.uint8))  # dynamic input: boxes / (200, 100)
    assert [score for _, score in found] == pytest.approx([0.9, 0.8])
    assert found[0][0] == pytest.approx((0.05, 0.2, 0.25, 0.9))
    assert found[1][0] == pytest.approx((0.3, 0.1, 0.45, 0.4))


def test_torchvision_outputs_told_apart_by_shape_when_names_say_nothing(tmp_path):
    det = detector(tmp_path, classes=[1, 1, 1, 1], names=("out0", "out1", "out2"), threshold=0.0, max_people=2)
    assert det.layout == "torchvision"
    found = det.detect(np.zeros((100, 100, 3), np.uint8))
    assert [score for _, score in found] == pytest.approx([0.95, 0.9])  # max_people best ones


def test_yolo_layout_with_a_fixed_uint8_input(tmp_path):
    det = detector(tmp_path, classes=[0, 2, 0, 0], layout="yolo", image="uint8_nhwc", size=(100, 100))
    assert det.layout == "yolo" and det.fixed_hw == (100, 100) and det.person_class == 0
    found = det.detect(np.zeros((48, 64, 3), np.uint8))  # resized to the input: boxes / (100, 100)
    assert [score for _, score in found] == pytest.approx([0.95, 0.9])
    assert found[0][0] == pytest.approx((0.0, 0.0, 0.05, 0.05))
    assert found[1][0] == pytest.approx((0.1, 0.2, 0.5, 0.9))


def test_configured_person_class_and_threshold(tmp_path):
    det = detector(tmp_path, classes=[7, 7, 1, 7], person_class=7, threshold=0.25)
    assert [s for _, s in det.detect(np.zeros((100, 100, 3), np.uint8))] == pytest.approx([0.9, 0.8, 0.3])


def test_a_graph_that_is_not_a_detector_is_refused_by_name(tmp_path):
    from tests.person_graphs import box_scorer

    path = box_scorer(tmp_path / "scorer.onnx", ["a"], np.zeros((4, 1)), np.zeros(1))
    with pytest.raises(SpecError, match=r"scorer\.onnx: a person detector takes one image input"):
        PersonDetector(DetectorConfig(path=path))
    with pytest.raises(SpecError, match=r"missing\.onnx: model file not found"):
        PersonDetector(DetectorConfig(path=tmp_path / "missing.onnx"))


def test_iou():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]])
    b = np.array([[1, 1, 3, 3], [5, 5, 6, 6]])
    assert iou(a, b) == pytest.approx(np.array([[1 / 7, 0], [0, 0]]))
    assert iou(np.zeros((0, 4)), b).shape == (0, 2)


def walk(start, velocity, steps):
    x, y = start
    return [(x + velocity[0] * i, y + velocity[1] * i) for i in range(steps)]


def box_at(x, y, w=0.2, h=0.4):
    return (x, y, x + w, y + h)


def test_ids_stay_with_people_moving_and_crossing():
    """Two people walk towards each other, pass (boxes overlap) and go on; the detector lists them in a changing
    order. Each keeps the id it got first."""
    tracker = IouTracker(min_iou=0.3, lost_after_s=3.0)
    left = walk((0.05, 0.3), (0.03, 0.0), 25)
    right = walk((0.75, 0.32), (-0.03, 0.0), 25)
    seen = {}
    for step, (a, b) in enumerate(zip(left, right, strict=True)):
        detections = [(box_at(*a), 0.9), (box_at(*b), 0.8)]
        if step % 2:
            detections.reverse()
        people, lost = tracker.update(detections, now=float(step))
        assert lost == []
        for person in people:
            who = "left" if person.box == box_at(*a) else "right"
            seen.setdefault(who, set()).add(person.id)
    assert seen == {"left": {1}, "right": {2}}


def test_a_missed_detection_keeps_the_id_and_a_long_absence_loses_it():
    tracker = IouTracker(min_iou=0.3, lost_after_s=2.0)
    (p,), _ = tracker.update([(box_at(0.1, 0.1), 0.9)], now=0.0)
    assert tracker.update([], now=1.0) == ([], [])
    (again,), _ = tracker.update([(box_at(0.11, 0.1), 0.9)], now=1.5)
    assert again.id == p.id
    people, lost = tracker.update([], now=3.5)
    assert people == [] and lost == [p.id]
    (newcomer,), _ = tracker.update([(box_at(0.11, 0.1), 0.9)], now=4.0)
    assert newcomer.id == p.id + 1  # ids are never reused


def test_a_new_person_far_from_everyone_gets_a_new_id():
    tracker = IouTracker()
    (a,), _ = tracker.update([(box_at(0.0, 0.0), 0.9)], now=0.0)
    people, _ = tracker.update([(box_at(0.01, 0.0), 0.9), (box_at(0.7, 0.5), 0.9)], now=1.0)
    assert [p.id for p in people] == [a.id, a.id + 1]
