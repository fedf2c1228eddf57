"""agent.live.events: scripted score streams → exact event sequences, the Event JSON contract, and a property test."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import EventsConfig
from agent.live.events import Event, EventTracker, tracked_labels, unknown_labels
from tests.docs import CONTRACTS, json_block

# The example of docs/contracts.md, "Event JSON (schema version 1)": the payload must have exactly its keys, in order.
EXAMPLE = json_block(CONTRACTS, "Event JSON (schema version 1)")

T0 = 1_764_254_400.0
CAM = "dock1"
LABELS = ["a", "b", "c"]


def config(**kw) -> EventsConfig:
    """Defaults that make scripts short: start on one hit, end on the first low score, no timed updates."""
    base = {"threshold": 0.5, "end_threshold": 0.3, "min_hits": 1, "end_after_s": 0.0, "update_s": 1000.0}
    return EventsConfig(**{**base, **kw})


def tracker(labels: list[str] = LABELS, **kw) -> EventTracker:
    return EventTracker(camera=CAM, model="m", labels=labels, config=config(**kw))


def feed(tr: EventTracker, rows: list[list[float]], *, t0: float = T0, dt: float = 1.0) -> list[Event]:
    """One update per row at ``received_at = t0 + i * dt``, each clip spanning 2 s of stream time."""
    events = []
    for i, row in enumerate(rows):
        t = t0 + i * dt
        events += tr.update(row, clip_start=100.0 + i * dt, clip_end=102.0 + i * dt, received_at=t)
    return events


def summary(events: list[Event]) -> list[tuple]:
    """(seq, type, label, start_time - T0, end_time - T0 or None) per event."""
    return [
        (e.seq, e.type, e.label, round(e.start_time - T0, 6), None if e.end_time is None else round(e.end_time - T0, 6))
        for e in events
    ]


def one(score: float, labels: list[str] = LABELS) -> list[float]:
    """Scores where only the first label has ``score``."""
    return [score] + [0.0] * (len(labels) - 1)


# --- starting -------------------------------------------------------------------------------------------------------


def test_min_hits_1_starts_on_the_first_hit():
    tr = tracker()
    events = feed(tr, [one(0.49), one(0.5), one(0.2)])
    assert summary(events) == [(1, "start", "a", 1.0, None), (2, "end", "a", 1.0, 2.0)]
    start = events[0]
    assert start.score == start.top_score == 0.5
    assert start.id == "dock1-000001" and events[1].id == "dock1-000002"
    assert start.camera == CAM and start.model == "m"


def test_min_hits_3_needs_consecutive_hits_and_starts_at_the_first():
    tr = tracker(min_hits=3)
    # Two hits, a miss (0.45 < threshold breaks the streak), then three hits: start at t=5, start_time=3.
    events = feed(tr, [one(0.6), one(0.7), one(0.45), one(0.8), one(0.95), one(0.6)])
    assert summary(events) == [(1, "start", "a", 3.0, None)]
    assert events[0].score == 0.6 and events[0].top_score == 0.95
    assert tr.active() == {"a": True, "b": False, "c": False}


def test_streak_is_not_active():
    tr = tracker(min_hits=3)
    assert feed(tr, [one(0.9), one(0.9)]) == []
    assert tr.active()["a"] is False


# --- ending ---------------------------------------------------------------------------------------------------------


def test_hysteresis_scores_between_thresholds_keep_the_action():
    tr = tracker()
    # 0.3 and 0.49 are >= end_threshold: the action stays; 0.29 ends it.
    events = feed(tr, [one(0.9), one(0.4), one(0.3), one(0.49), one(0.29), one(0.4)])
    assert summary(events) == [(1, "start", "a", 0.0, None), (2, "end", "a", 0.0, 4.0)]
    assert events[1].score == 0.29 and events[1].top_score == 0.9


def test_dips_shorter_than_end_after_s_do_not_end():
    tr = tracker(end_after_s=2.0)
    rows = [one(0.9), one(0.1), one(0.1), one(0.4), one(0.1), one(0.2), one(0.0), one(0.0)]
    #        t=0       t=1 low   t=2 (1 s)  t=3 resets t=4 low   t=5 (1 s)  t=6 (2 s): end
    events = feed(tr, rows)
    assert summary(events) == [(1, "start", "a", 0.0, None), (2, "end", "a", 0.0, 6.0)]


def test_end_after_s_is_measured_on_the_event_clock():
    tr = tracker(end_after_s=1.5)
    # Updates every 0.5 s: first low at t=1.0, so the end comes at t=2.5.
    events = feed(tr, [one(0.9), one(0.9)] + [one(0.0)] * 5, dt=0.5)
    assert summary(events) == [(1, "start", "a", 0.0, None), (2, "end", "a", 0.0, 2.5)]


def test_a_new_action_after_an_end_gets_a_new_start():
    tr = tracker(min_hits=2)
    events = feed(tr, [one(0.9), one(0.9), one(0.0), one(0.9), one(0.9), one(0.0)])
    assert summary(events) == [
        (1, "start", "a", 0.0, None),
        (2, "end", "a", 0.0, 2.0),
        (3, "start", "a", 3.0, None),
        (4, "end", "a", 3.0, 5.0),
    ]
    assert events[2].top_score == 0.9  # the second action's top score starts afresh


# --- updates --------------------------------------------------------------------------------------------------------


def test_update_when_top_score_rises_by_the_margin():
    tr = tracker(update_margin=0.05)
    # Reported top 0.6; 0.62 no; 0.65 yes (exactly the margin); 0.69 no; 0.5 no; 0.7 yes.
    events = feed(tr, [one(0.6), one(0.62), one(0.65), one(0.69), one(0.5), one(0.7), one(0.1)])
    assert summary(events) == [
        (1, "start", "a", 0.0, None),
        (2, "update", "a", 0.0, None),
        (3, "update", "a", 0.0, None),
        (4, "end", "a", 0.0, 6.0),
    ]
    assert [(e.score, e.top_score) for e in events] == [(0.6, 0.6), (0.65, 0.65), (0.7, 0.7), (0.1, 0.7)]


def test_margin_counts_from_the_streak_top_score():
    tr = tracker(min_hits=2, update_margin=0.1)
    events = feed(tr, [one(0.9), one(0.6), one(0.95), one(1.0)])
    assert [(e.type, e.score, e.top_score) for e in events] == [("start", 0.6, 0.9), ("update", 1.0, 1.0)]


def test_update_every_update_s_since_the_last_event():
    tr = tracker(update_s=3.0, update_margin=0.2)
    # Start t=0; timed updates at t=3 and t=6; a margin update at t=7 restarts the timer: next at t=10.
    rows = [one(0.6)] * 7 + [one(0.85)] + [one(0.6)] * 3
    events = feed(tr, rows)
    assert [(e.type, e.received_at - T0) for e in events] == [
        ("start", 0.0),
        ("update", 3.0),
        ("update", 6.0),
        ("update", 7.0),
        ("update", 10.0),
    ]


def test_timed_updates_continue_while_the_score_is_low_but_not_ended():
    tr = tracker(update_s=2.0, end_after_s=10.0)
    events = feed(tr, [one(0.9)] + [one(0.0)] * 4)
    assert [(e.type, e.received_at - T0, e.score) for e in events] == [
        ("start", 0.0, 0.9),
        ("update", 2.0, 0.0),
        ("update", 4.0, 0.0),
    ]


# --- labels ---------------------------------------------------------------------------------------------------------


def test_per_label_thresholds_override_the_default():
    tr = tracker(thresholds={"b": 0.8, "zzz": 0.9})
    events = feed(tr, [[0.6, 0.6, 0.4], [0.6, 0.8, 0.4]])
    assert summary(events) == [(1, "start", "a", 0.0, None), (2, "start", "b", 1.0, None)]


def test_include_and_exclude_pick_the_tracked_labels():
    tr = tracker(include=["a", "b", "nope"], exclude=["b", "typo"])
    assert tr.active() == {"a": False}
    events = feed(tr, [[0.9, 0.9, 0.9], [0.0, 0.0, 0.0]])
    assert summary(events) == [(1, "start", "a", 0.0, None), (2, "end", "a", 0.0, 1.0)]
    assert tracked_labels(config(exclude=["c"]), LABELS) == ["a", "b"]
    assert tracked_labels(config(include=[]), LABELS) == []


def test_unknown_labels_lists_each_unknown_name_once():
    cfg = config(include=["a", "x"], exclude=["y", "x"], thresholds={"b": 0.6, "z": 0.7})
    assert unknown_labels(cfg, LABELS) == ["x", "y", "z"]
    assert unknown_labels(config(), LABELS) == []


def test_several_labels_active_at_once_in_label_order():
    tr = tracker(min_hits=2)
    rows = [[0.9, 0.0, 0.9], [0.9, 0.9, 0.9], [0.9, 0.9, 0.0], [0.0, 0.9, 0.0]]
    events = feed(tr, rows)
    assert summary(events) == [
        (1, "start", "a", 0.0, None),
        (2, "start", "c", 0.0, None),
        (3, "start", "b", 1.0, None),
        (4, "end", "c", 0.0, 2.0),
        (5, "end", "a", 0.0, 3.0),
    ]
    assert [e.id for e in events] == [f"dock1-{i:06d}" for i in range(1, 6)]
    assert tr.active() == {"a": False, "b": True, "c": False}


# --- stream down, close ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["stream_down", "close"])
def test_stream_down_and_close_end_active_actions_only(method):
    tr = tracker(min_hits=2, end_after_s=5.0)
    started = feed(tr, [[0.9, 0.0, 0.0], [0.7, 0.9, 0.1]])
    started += tr.update([0.8, 0.9, 0.6], clip_start=50.0, clip_end=53.0, received_at=T0 + 2, inference_ms=12.5)
    # a active since t=0, b since t=1, c one hit into a streak (not active).
    assert summary(started) == [(1, "start", "a", 0.0, None), (2, "start", "b", 1.0, None)]
    events = getattr(tr, method)(T0 + 10)
    assert summary(events) == [(3, "end", "a", 0.0, 10.0), (4, "end", "b", 1.0, 10.0)]
    end = events[0]
    assert (end.score, end.top_score) == (0.8, 0.9)
    assert (end.clip_start, end.clip_end, end.received_at, end.inference_ms) == (T0 - 1, T0 + 2, T0 + 2, 12.5)
    assert tr.active() == {"a": False, "b": False, "c": False}
    assert getattr(tr, method)(T0 + 11) == []


def test_stream_down_forgets_partial_streaks():
    tr = tracker(min_hits=2)
    feed(tr, [one(0.9)])
    assert tr.stream_down(T0 + 1) == []
    events = feed(tr, [one(0.9), one(0.9)], t0=T0 + 5)
    # The hit before the gap does not count: the start comes with the second hit after it.
    assert summary(events) == [(1, "start", "a", 5.0, None)]
    assert events[0].received_at == T0 + 6


def test_stream_down_before_any_update_is_empty():
    assert tracker().stream_down(T0) == []
    assert tracker().close(T0) == []


# --- clip times, clock, inputs --------------------------------------------------------------------------------------


def test_clip_span_is_anchored_at_received_at():
    tr = tracker()
    (ev,) = tr.update(one(0.9), clip_start=10.0, clip_end=12.5, received_at=T0, inference_ms=31.5)
    assert (ev.clip_start, ev.clip_end, ev.received_at) == (T0 - 2.5, T0, T0)
    assert ev.start_time == T0 and ev.end_time is None and ev.inference_ms == 31.5


def test_event_clock_never_runs_backwards():
    tr = tracker()
    tr.update(one(0.9), clip_start=0.0, clip_end=2.0, received_at=T0)
    (end,) = tr.update(one(0.0), clip_start=1.0, clip_end=3.0, received_at=T0 - 60)  # wall clock stepped back
    assert end.end_time == T0 >= end.start_time
    assert end.clip_end == T0 - 60  # the clip itself is reported as received


def test_scores_as_numpy_and_nan():
    tr = tracker()
    (start,) = tr.update(np.array([0.9, 0.1, 0.1], dtype=np.float32), clip_start=0, clip_end=2, received_at=T0)
    assert start.label == "a" and isinstance(start.score, float)
    (end,) = tr.update([math.nan, 0.1, 0.1], clip_start=1, clip_end=3, received_at=T0 + 1)
    assert end.type == "end" and end.score == 0.0


@pytest.mark.parametrize("scores", [[0.1, 0.2], [0.1, 0.2, 0.3, 0.4], [[0.1, 0.2, 0.3]]])
def test_wrong_number_of_scores_is_an_error(scores):
    with pytest.raises(ValueError, match="3 labels"):
        tracker().update(scores, clip_start=0, clip_end=2, received_at=T0)


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="duplicate"):
        EventTracker(camera=CAM, model="m", labels=["a", "a"], config=config())
    with pytest.raises(ValueError, match="non-finite"):
        tracker().update(one(0.9), clip_start=0, clip_end=2, received_at=math.nan)
    with pytest.raises(ValueError, match="non-finite"):
        tracker().stream_down(math.inf)


# --- Event JSON -----------------------------------------------------------------------------------------------------


def keys(obj: dict) -> dict:
    """The key structure of a JSON object: key → nested structure or None."""
    return {k: keys(v) if isinstance(v, dict) else None for k, v in obj.items()}


def test_payload_has_the_documented_keys_and_serialises():
    tr = tracker()
    (start,) = tr.update(one(0.912345), clip_start=10.0, clip_end=12.1, received_at=T0 + 0.1, inference_ms=31.54)
    (end,) = tr.update(one(0.1), clip_start=11.0, clip_end=13.1, received_at=T0 + 1.1, inference_ms=30.0)
    expected = keys(json.loads(EXAMPLE))
    for ev in (start, end):
        payload = ev.payload(published_at=ev.received_at + 0.084)
        assert keys(payload) == expected
        assert list(payload) == list(expected)  # same order as the documented example
        assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    p = start.payload(published_at=T0 + 0.184)
    assert p["v"] == 1 and p["id"] == "dock1-000001" and p["seq"] == 1 and p["type"] == "start"
    assert p["camera"] == CAM and p["label"] == "a" and p["model"] == "m"
    assert p["score"] == p["top_score"] == 0.9123
    assert p["start_time"] == round(T0 + 0.1, 3) and p["end_time"] is None
    assert p["clip"] == {"start": round(T0 - 2.0, 3), "end": round(T0 + 0.1, 3)}
    assert p["latency_ms"] == {"capture_to_publish": 84.0, "inference": 31.5}
    q = end.payload(published_at=T0 + 1.2)
    assert q["type"] == "end" and q["end_time"] == round(T0 + 1.1, 3) and q["seq"] == 2


# --- property -------------------------------------------------------------------------------------------------------

SEQUENCE = re.compile(r"(su*e)*(su*)?")
LETTER = {"start": "s", "update": "u", "end": "e"}


@st.composite
def configs(draw) -> EventsConfig:
    end_threshold = draw(st.floats(0.0, 0.9))
    start = st.floats(end_threshold, 1.0, exclude_min=True)
    include = draw(st.none() | st.lists(st.sampled_from([*LABELS, "x"]), max_size=4))
    return EventsConfig(
        threshold=draw(start),
        end_threshold=end_threshold,
        min_hits=draw(st.integers(1, 4)),
        end_after_s=draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 5.0)),
        update_s=draw(st.floats(0.1, 10.0)),
        update_margin=draw(st.floats(0.001, 0.5)),
        thresholds=draw(st.dictionaries(st.sampled_from([*LABELS, "y"]), start, max_size=3)),
        include=include,
        exclude=draw(st.lists(st.sampled_from([*LABELS, "z"]), max_size=2)),
    )


SCORE = st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0, math.nan]) | st.floats(0.0, 1.0)
STEP = st.tuples(
    st.sampled_from(["update"] * 8 + ["stream_down", "close"]),
    st.lists(SCORE, min_size=3, max_size=3),
    st.sampled_from([0.0, 0.5, 1.0, -2.0]) | st.floats(0.0, 5.0),  # dt; occasionally the wall clock steps back
    st.floats(0.0, 10.0),  # clip span (stream seconds)
)


@settings(max_examples=300, deadline=None)
@given(cfg=configs(), steps=st.lists(STEP, max_size=60))
def test_event_sequences_are_well_formed(cfg, steps):
    tr = EventTracker(camera=CAM, model="m", labels=LABELS, config=cfg)
    tracked = tracked_labels(cfg, LABELS)
    events: list[Event] = []
    t = T0
    for op, scores, dt, span in steps:
        t += dt
        if op == "update":
            out = tr.update(scores, clip_start=1000.0 - span, clip_end=1000.0, received_at=t, inference_ms=5.0)
            assert [LABELS.index(e.label) for e in out] == sorted({LABELS.index(e.label) for e in out})
        else:
            out = getattr(tr, op)(t)
            assert all(e.type == "end" for e in out)
        events += out
        for label, on in tr.active().items():
            mine = [e.type for e in events if e.label == label]
            assert on == (bool(mine) and mine[-1] != "end")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.id for e in events}) == len(events)
    assert all(e.id == f"{CAM}-{e.seq:06d}" for e in events)
    assert {e.label for e in events} <= set(tracked)
    for label in LABELS:
        mine = [e for e in events if e.label == label]
        assert SEQUENCE.fullmatch("".join(LETTER[e.type] for e in mine)), [e.type for e in mine]
        for e in mine:
            assert (e.end_time is None) == (e.type != "end")
            assert e.end_time is None or e.end_time >= e.start_time
            assert e.top_score >= e.score or math.isclose(e.top_score, e.score)
            json.dumps(e.payload(published_at=t), allow_nan=False)


# Person models: one tracker per (person, label), sharing the camera's seq.


def person_events(**kw):
    from agent.live.events import PersonEvents

    return PersonEvents(camera=CAM, model="m", labels=LABELS, config=config(**kw))


def person(pid: int, x: float = 0.1):
    from agent.live.people import Person

    return Person(pid, (x, 0.1, x + 0.2, 0.9), 0.9)


def feed_people(tracker, steps: list[tuple[list, list[list[float]], list[int]]]) -> list[Event]:
    events = []
    for i, (people, rows, lost) in enumerate(steps):
        t = T0 + i
        scores = np.asarray(rows, dtype=np.float64).reshape(len(people), len(LABELS))
        events += tracker.update(people, scores, lost=lost, clip_start=100.0 + i, clip_end=102.0 + i, received_at=t)
    return events


def test_per_person_start_and_end_events():
    """Person 1 waves (label a) from t1 to t3; person 2 does b from t2 until the tracker loses them at t4."""
    events = feed_people(
        person_events(),
        [
            ([person(1)], [one(0.1)], []),
            ([person(1), person(2, 0.6)], [one(0.9), [0, 0.8, 0]], []),
            ([person(1), person(2, 0.62)], [one(0.9), [0, 0.7, 0]], []),
            ([person(1)], [one(0.1)], []),  # person 2 not detected: their action goes on
            ([person(1)], [one(0.1)], [2]),  # ... until the tracker gives them up
        ],
    )
    got = [(e.seq, e.type, e.person, e.label, e.end_time and e.end_time - T0) for e in events]
    assert got == [
        (1, "start", 1, "a", None),
        (2, "start", 2, "b", None),
        (3, "end", 1, "a", 3.0),
        (4, "end", 2, "b", 4.0),
    ]
    assert len({e.id for e in events}) == len(events)
    assert events[1].box == (0.6, 0.1, 0.8, 0.9) and events[3].box == (0.62, 0.1, 0.8200000000000001, 0.9)
    payload = events[1].payload(T0 + 2)
    assert payload["person"] == 2 and payload["box"] == [0.6, 0.1, 0.8, 0.9] and payload["zones"] == []
    assert list(payload)[-3:] == ["person", "box", "zones"]
    assert set(payload) - {"person", "box", "zones"} == set(json.loads(EXAMPLE.replace("start|update|end", "start")))
    assert "person" not in feed(tracker(), [one(0.9)])[0].payload(T0)  # clip models: no person keys


def test_person_state_is_on_while_anyone_does_it_and_stream_down_ends_everyone():
    tracker = person_events()
    feed_people(tracker, [([person(1), person(2, 0.6)], [one(0.9), one(0.9)], [])])
    assert tracker.active() == {"a": True, "b": False, "c": False}
    feed_people(tracker, [([person(1), person(2, 0.6)], [one(0.1), one(0.9)], [])])
    assert tracker.active()["a"]  # person 2 still does it
    ended = tracker.stream_down(T0 + 5)
    assert [(e.type, e.person, e.label) for e in ended] == [("end", 2, "a")]
    assert tracker.active() == {"a": False, "b": False, "c": False} and tracker.people == {}


def test_person_scores_must_match_people():
    with pytest.raises(ValueError, match="2 score rows for 1 people"):
        person_events().update([person(1)], np.zeros((2, 3)), clip_start=0, clip_end=1, received_at=T0)


# --- identity and clocks ----------------------------------------------------------------------------------------


def test_an_action_has_one_action_id_and_ids_carry_the_run():
    tr = EventTracker(camera=CAM, model="m", labels=LABELS, config=config(update_s=1.0), run="mi6f0zk3")
    events = feed(tr, [one(0.9), one(0.9), one(0.1), one(0.9), one(0.1)])
    assert [e.type for e in events] == ["start", "update", "end", "start", "end"]
    assert [e.id for e in events] == [f"{CAM}-mi6f0zk3-{n:06d}" for n in range(1, 6)]
    assert [e.action_id for e in events] == [events[0].id] * 3 + [events[3].id] * 2
    payload = events[1].payload(published_at=T0 + 2)
    assert payload["action_id"] == events[0].id and list(payload)[:3] == ["v", "id", "action_id"]


def test_two_runs_never_share_an_id():
    first = EventTracker(camera=CAM, model="m", labels=LABELS, config=config(), run="mi6f0zk3")
    second = EventTracker(camera=CAM, model="m", labels=LABELS, config=config(), run="mi6f0zk9")
    ids = [e.id for tr in (first, second) for e in feed(tr, [one(0.9), one(0.1)])]
    assert len(set(ids)) == len(ids) == 4


def test_durations_run_on_the_monotonic_clock_whatever_the_wall_clock_does():
    """The wall clock steps back an hour while the action is active: it still ends after end_after_s of monotonic
    time (on the wall clock alone it would wait an hour), and a step forward does not end it early."""
    tr = tracker(end_after_s=2.0)
    walls = [T0, T0 + 1, T0 - 3600, T0 - 3599, T0 - 3598, T0 + 3600]
    monos = [500.0, 501.0, 502.0, 503.0, 504.0, 505.0]
    scores = [0.9, 0.1, 0.1, 0.1, 0.1, 0.1]
    events = []
    for wall, mono, score in zip(walls, monos, scores, strict=True):
        events += tr.update(one(score), clip_start=0.0, clip_end=2.0, received_at=wall, monotonic=mono)
    assert [e.type for e in events] == ["start", "end"]
    assert events[1].end_time == T0 + 1  # reported on the event clock, which never runs backwards
    step = EventTracker(camera=CAM, model="m", labels=LABELS, config=config(end_after_s=2.0))
    events = step.update(one(0.9), clip_start=0, clip_end=2, received_at=T0, monotonic=10.0)
    events += step.update(one(0.1), clip_start=0, clip_end=2, received_at=T0 + 1, monotonic=11.0)
    events += step.update(one(0.1), clip_start=0, clip_end=2, received_at=T0 + 7200, monotonic=12.0)
    assert [e.type for e in events] == ["start"]  # one monotonic second below: not ended by the wall clock's jump


def test_an_end_that_no_clip_caused_has_no_capture_latency():
    tr = tracker()
    feed(tr, [one(0.9)])
    (down,) = tr.stream_down(T0 + 9.0)
    assert not down.from_clip and down.payload(published_at=T0 + 9.5)["latency_ms"]["capture_to_publish"] is None
    feed(tr, [one(0.9)], t0=T0 + 10)
    (closed,) = tr.close(T0 + 12.0)
    assert closed.payload(published_at=T0 + 12.0)["latency_ms"]["capture_to_publish"] is None


# Zones: where a person stands (the bottom centre of their box), and events.zones.

ZONES = {
    "door": [(0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0)],
    "yard": [(0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)],
}


def walker(x: float, pid: int = 1):
    """A person whose feet are at (x + 0.1, 0.9): in the door zone left of 0.4, in the yard right of it."""
    from agent.live.people import Person

    return Person(pid, (x, 0.1, x + 0.2, 0.9), 0.9)


def zoned(**kw):
    from agent.live.events import PersonEvents

    return PersonEvents(camera=CAM, model="m", labels=LABELS, config=config(**kw), zones=ZONES)


def walk(tracker, xs: list[float], score: float = 0.9) -> list[Event]:
    """Person 1 at each x in turn, one clip a second, label a scoring ``score`` all along."""
    return feed_people(tracker, [([walker(x)], [one(score)], []) for x in xs])


def test_person_events_say_which_zones_the_person_stands_in():
    events = walk(zoned(update_s=0.5), [0.1, 0.2, 0.5, 0.7, 0.95])  # an update at every clip
    assert [(e.type, e.zones) for e in events] == [
        ("start", ("door",)),
        ("update", ("door",)),
        ("update", ("yard",)),
        ("update", ("yard",)),
        ("update", ()),  # feet at x 1.05: outside both
    ]
    assert events[2].payload(T0 + 3)["zones"] == ["yard"]
    assert [e.zones for e in walk(zoned(update_s=0.5), [0.35, 0.45])] == [("door",), ("yard",)]  # the feet decide


def test_events_zones_ignore_people_elsewhere_and_start_when_they_enter():
    """events.zones [yard]: the person in the door zone never starts anything; entering the yard, they need
    min_hits clips there."""
    events = walk(zoned(zones=["yard"], min_hits=2), [0.1, 0.2, 0.3, 0.5, 0.6, 0.7])
    assert [(e.type, e.zones, round(e.start_time - T0)) for e in events] == [("start", ("yard",), 3)]


def test_an_action_that_leaves_the_zones_ends_after_end_after_s():
    """Started in the yard, the person walks back to the door: outside the yard their scores count as 0, so the
    action ends end_after_s (2 s) after the first clip outside, unless they come back first."""
    tracker = zoned(zones=["yard"], end_after_s=2.0, update_s=1000)
    events = walk(tracker, [0.6, 0.6, 0.2, 0.2, 0.2, 0.2])  # leaves at t2
    assert [(e.type, e.zones, e.end_time and round(e.end_time - T0)) for e in events] == [
        ("start", ("yard",), None),
        ("end", ("door",), 4),  # t2 + 2 s
    ]
    back = walk(zoned(zones=["yard"], end_after_s=2.0, update_s=1000), [0.6, 0.2, 0.6, 0.2, 0.2, 0.2, 0.2])
    assert [(e.type, e.end_time and round(e.end_time - T0)) for e in back] == [("start", None), ("end", 5)]


def test_without_events_zones_everyone_counts_wherever_they_are():
    events = walk(zoned(), [0.2, 0.6, 0.9])
    assert [(e.type, e.zones) for e in events] == [("start", ("door",))]  # still active in the yard and beyond
