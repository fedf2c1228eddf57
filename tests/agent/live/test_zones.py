"""Zones and regions through the agent, on a real clip: a bright figure walks across a dark hall (H.264 from ffmpeg),
a detector finds it from the decoded pixels (tests/person_graphs.py), and a person model that always sees "walk"
scores it; the zones decide the events. Two camera entries name the one file: one stream, decoded once.

The clip (tests/videos.py, ``walking_figure``): the figure's feet cross the middle of the frame at 2.1 s and again at
5.9 s; "left" and "right" are the two halves of the floor. From one clip to the next (0.4 s) it moves at most 31 px:
its boxes overlap enough for the tracker to follow it.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agent.config import parse_config
from agent.live.app import Agent
from agent.metrics import Metrics
from tests.person_graphs import box_scorer, bright_object_detector
from tests.videos import walking_figure

pytestmark = pytest.mark.timeout(120)

LEFT = [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]]
RIGHT = [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]]
FEET_Y = 216 / 240


@pytest.fixture(scope="module")
def hall(tmp_path_factory):
    return walking_figure(tmp_path_factory.mktemp("hall") / "hall.mp4")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    work = tmp_path_factory.mktemp("models")
    model = box_scorer(work / "walk.onnx", ["walk"], np.zeros((4, 1)), np.array([10.0]), size=96)
    return model, bright_object_detector(work / "bright.onnx")


class Events:
    def __init__(self) -> None:
        self.events = []

    def publish_event(self, event) -> None:
        self.events.append(event)

    def publish_state(self, camera, label, on) -> None: ...
    def publish_status(self, camera, online) -> None: ...
    def publish_stats(self, stats) -> None: ...
    def announce(self, camera, labels) -> None: ...

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None: ...

    def of(self, camera: str) -> list:
        return [e for e in self.events if e.camera == camera]


def run(hall, models, cameras: list[dict]) -> tuple[Events, Metrics]:
    model, detector = models
    config = parse_config(
        {
            "cameras": [{"url": str(hall), "realtime": True, "every_s": 0.4} | c for c in cameras],
            "models": {"people": {"path": str(model), "device": "cpu", "detector": {"path": str(detector)}}},
            # a start on the second hit, an update at every clip, an end at the first low score
            "events": {"threshold": 0.9, "end_threshold": 0.5, "min_hits": 2, "end_after_s": 0, "update_s": 1e-9},
            "metrics": {"enabled": False},
        }
    )
    metrics, sink = Metrics(), Events()

    async def main() -> None:
        await asyncio.wait_for(Agent(config, metrics=metrics, sink=sink).run(asyncio.Event()), 100)

    asyncio.run(main())  # the file plays once, in real time (the tracker follows the figure); then the agent stops
    return sink, metrics


def runs(values: list) -> list:
    """Consecutive repeats collapsed."""
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def test_zones_follow_the_person_and_events_zones_watch_only_there(hall, models):
    zones = {"left": LEFT, "right": RIGHT}
    sink, metrics = run(
        hall,
        models,
        [
            {"name": "hall", "zones": zones},
            # the same stream, only the lower part of the frame, events only for people on the right
            {"name": "watch", "zones": zones, "region": [0.0, 0.3, 1.0, 1.0], "events": {
                "threshold": 0.9, "end_threshold": 0.5, "min_hits": 2, "end_after_s": 0, "update_s": 1e-9,
                "zones": ["right"]}},
        ],
    )  # fmt: skip
    # everyone counts: one action, its events say where the figure walks
    hall_events = sink.of("hall")
    assert [e.type for e in hall_events][0] == "start" and hall_events[-1].type == "end"
    assert len({e.action_id for e in hall_events}) == 1
    assert runs([e.zones for e in hall_events if e.from_clip]) == [("left",), ("right",), ("left",)]
    for e in hall_events:  # the feet of the box the detector found, in the whole frame
        assert e.box[3] == pytest.approx(FEET_Y, abs=0.02) and e.person == hall_events[0].person
    # events.zones [right]: nothing while the figure is on the left; it starts after entering the right (two hits
    # there), and ends at the first clip back on the left; nothing after
    watch = sink.of("watch")
    assert [(e.type, e.zones) for e in watch][0] == ("start", ("right",))
    assert [e.type for e in watch].count("start") == 1
    assert all(e.zones == ("right",) for e in watch[:-1]) and (watch[-1].type, watch[-1].zones) == ("end", ("left",))
    assert watch[-1].from_clip and watch[-1].score == 0.0
    assert watch[0].start_time > hall_events[0].start_time
    # the region's boxes, back in the whole frame: where the first entry's detector saw the figure
    for e in watch:
        assert e.box[3] == pytest.approx(FEET_Y, abs=0.02) and e.box[1] == pytest.approx(120 / 240, abs=0.03)
    # one stream: decoded once, counted under its first entry; each entry sampled its own frames
    assert metrics.value("actionstream_frames_decoded_total", camera="hall") == 200
    assert metrics.registry.get_sample_value("actionstream_frames_decoded_total", {"camera": "watch"}) is None
    assert metrics.value("actionstream_frames_sampled_total", camera="watch") > 0
