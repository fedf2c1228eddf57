"""The demo's scorecard: segment matching at temporal IoU >= 0.5."""

from __future__ import annotations

import pytest

from agent.demo.scorecard import Segment, score, segments_from_events, tiou


def test_tiou():
    assert tiou(Segment("a", 0, 4), Segment("a", 2, 6)) == pytest.approx(2 / 6)
    assert tiou(Segment("a", 0, 4), Segment("a", 0, 4)) == 1.0
    assert tiou(Segment("a", 0, 1), Segment("a", 2, 3)) == 0.0


def test_score_matches_one_to_one_per_label():
    truth = [Segment("left", 10, 14), Segment("up", 20, 23), Segment("grow", 30, 33)]
    found = [
        Segment("left", 10.5, 14.5),  # IoU 3.5/4.5: match, delay +0.5
        Segment("left", 11, 14),  # a duplicate of the same action: false positive
        Segment("down", 20, 23),  # wrong label: false positive
        Segment("grow", 31.5, 36),  # IoU 1.5/6: too little overlap
    ]
    card = score(truth, found)
    assert (card["matched"], card["segments"], card["detected"]) == (1, 3, 4)
    assert card["precision"] == pytest.approx(1 / 4) and card["recall"] == pytest.approx(1 / 3)
    assert card["f1"] == pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))
    assert card["mean_start_delay_s"] == pytest.approx(0.5)


def test_score_with_nothing_found():
    card = score([Segment("a", 0, 1)], [])
    assert card["f1"] == 0.0 and card["mean_start_delay_s"] is None


def test_segments_from_events_pairs_start_and_end_in_stream_time():
    events = [
        {"type": "start", "label": "up", "start_time": 1010.0, "end_time": None},
        {"type": "update", "label": "up", "start_time": 1010.0, "end_time": None},
        {"type": "start", "label": "left", "start_time": 1012.0, "end_time": None},
        {"type": "end", "label": "up", "start_time": 1010.0, "end_time": 1014.0},
        {"type": "end", "label": "left", "start_time": 1012.0, "end_time": 1015.0},
        {"type": "end", "label": "grow", "start_time": 1.0, "end_time": 2.0},  # never started: ignored
    ]
    found = segments_from_events(events, origin=1000.0, shift_s=0.5)
    assert found == [Segment("up", 9.5, 13.5), Segment("left", 11.5, 14.5)]
