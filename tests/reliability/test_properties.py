"""Item 5: property-based tests (hypothesis) for the config loader, the clip sampler and the event tracker."""

from __future__ import annotations

import copy
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import AgentConfig, ConfigError, EventsConfig, load_config, parse_config
from agent.live.clips import ClipBuffer
from agent.live.events import EventTracker
from tests.specs import I3D, SLOWFAST, TSN, make_spec

EXAMPLES = 200
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
PASSWORD = "Prop-Pa55word"


def check(record, case: str, expected: str, prop) -> None:
    """Run a hypothesis property; record whether it held (the falsifying example is in the failure)."""
    try:
        prop()
    except Exception:
        record.row(5, case, expected, f"{EXAMPLES} generated examples: a counterexample was found")
        raise
    record.row(5, case, expected, f"{EXAMPLES} generated examples: held for all")


# -- the config loader ---------------------------------------------------------------------------------------------

BASE = {
    "cameras": [{"name": "dock1", "url": f"rtsp://viewer:{PASSWORD}@192.0.2.1/s", "every_s": 1.0}],
    "models": {"m": {"path": "m.onnx", "max_batch": 4}},
    "mqtt": {"url": "mqtt://broker:1883", "username": "agent", "password": PASSWORD},
    "events": {"threshold": 0.6, "end_threshold": 0.3},
}
SCALARS = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=20)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
KEYS = st.sampled_from(
    ["cameras", "models", "mqtt", "events", "metrics", "log_level", "name", "url", "every_s", "path", "port", "qos"]
) | st.text(max_size=10)


def paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from paths(v, (*prefix, i))


@st.composite
def mutated_configs(draw):
    """The base config with a few random edits: a value replaced, a key added or removed."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(list(paths(data))))
        op = draw(st.sampled_from(["replace", "add", "delete"]))
        if not where:
            if op == "replace":
                data = draw(VALUES)
            continue
        parent = data
        try:
            for part in where[:-1]:
                parent = parent[part]
            if op == "replace":
                parent[where[-1]] = draw(VALUES)
            elif op == "delete":
                del parent[where[-1]]
            elif isinstance(parent[where[-1]], dict):
                parent[where[-1]][draw(KEYS)] = draw(VALUES)
        except (KeyError, IndexError, TypeError):
            pass
    return data


def test_config_loader_property(record, tmp_path):
    @SETTINGS
    @given(mutated_configs())
    def prop(data):
        try:
            config = parse_config(data, "site.yaml")
        except ConfigError as e:
            message = str(e)
            assert message.startswith("site.yaml: ") and "\n" not in message
            assert PASSWORD not in message
        else:
            assert isinstance(config, AgentConfig)
            assert PASSWORD not in repr(config)

    @SETTINGS
    @given(st.text(max_size=200) | st.binary(max_size=200))
    def prop_text(text):
        path = tmp_path / "site.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        try:
            load_config(path)
        except ConfigError as e:
            assert str(e).startswith(str(path))

    check(
        record,
        "config loader: random edits of a valid config; random text and bytes as the file",
        "a config or a one-line ConfigError naming the file; never another exception; no password in messages",
        lambda: (prop(), prop_text()),
    )


# -- the clip sampler -------------------------------------------------------------------------------------------------

STYLES = {"tsn": TSN, "i3d": I3D, "slowfast": SLOWFAST}


def encode(i: int) -> np.ndarray:
    return np.full((8, 8, 3), (i % 256, (i // 256) % 256, 0), np.uint8)


def index_of(image: np.ndarray) -> int:
    return int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])


def test_clip_sampler_property(record):
    @SETTINGS
    @given(
        st.sampled_from(list(STYLES)),
        st.lists(st.integers(1, 120), min_size=1, max_size=400),  # steps in ms (no restart: below every span)
        st.sampled_from([0.25, 0.5, 1.0, 1.7]),
        st.floats(0, 1e6),
    )
    def prop(style, steps_ms, every_s, t0):
        spec = make_spec(STYLES[style], size=8)
        buffer = ClipBuffer(spec, encode, camera="c", every_s=every_s)
        times = list(np.cumsum(steps_ms) / 1000 + t0)
        fine = min(spec.inputs, key=lambda i: i.stride_s)
        last_seq = 0
        for k, t in enumerate(times):
            clip = buffer.push(k, t, received_at=t)
            if clip is None:
                continue
            newest = clip.inputs[fine.name][-1]
            # The clip ends at the newest frame, or at the one before when the newest is past the last grid instant.
            assert clip.end in (times[k], times[k - 1] if k else times[k])
            assert times[index_of(newest)] == clip.end and clip.received_at == clip.end
            for inp in spec.inputs:
                frames = [index_of(img) for img in clip.inputs[inp.name]]
                assert len(frames) == inp.frames and frames == sorted(frames)
            assert clip.start <= clip.end and clip.seq == last_seq + 1
            last_seq = clip.seq

    check(
        record,
        "clip sampler: random frame timelines (TSN, I3D, SlowFast; every_s 0.25-1.7 s)",
        "no exception; every clip ends at the newest frame (or the one before, past the last grid instant); "
        "frames in time order; full inputs",
        prop,
    )


# -- the event tracker ------------------------------------------------------------------------------------------------

LABELS = ["a", "b", "c"]


@st.composite
def events_configs(draw) -> EventsConfig:
    end = draw(st.floats(0.0, 0.9))
    return EventsConfig(
        threshold=draw(st.floats(end, 1.0, exclude_min=True)),
        end_threshold=end,
        min_hits=draw(st.integers(1, 3)),
        end_after_s=draw(st.floats(0.0, 3.0)),
        update_s=draw(st.floats(0.1, 5.0)),
    )


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["update"] * 10 + ["stream_down", "close"]),
        st.lists(st.floats(0.0, 1.0) | st.just(math.nan), min_size=3, max_size=3),
        st.floats(-1.0, 3.0),  # the wall clock may step back
    ),
    max_size=80,
)


def test_event_tracker_property(record):
    @SETTINGS
    @given(events_configs(), STEPS)
    def prop(config, steps):
        tracker = EventTracker(camera="cam", model="m", labels=LABELS, config=config)
        events, t = [], 1e9
        for op, scores, dt in steps:
            t += dt
            if op == "update":
                events += tracker.update(scores, clip_start=t - 2, clip_end=t, received_at=t)
            else:
                events += getattr(tracker, op)(t)
        ids = [e.id for e in events]
        assert len(set(ids)) == len(ids) and [e.seq for e in events] == list(range(1, len(events) + 1))
        for label in LABELS:
            active = False
            for e in (e for e in events if e.label == label):
                assert (e.type == "start") == (not active), (label, [x.type for x in events if x.label == label])
                active = e.type != "end"
            assert tracker.active().get(label, False) == active

    check(
        record,
        "event tracker: random configs, scores (with NaN), clock steps back, stream down, close",
        "no exception; per label start, update*, end alternate; ids unique, seq 1, 2, 3 …",
        prop,
    )
