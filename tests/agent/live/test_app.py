"""The wiring (agent.live.app): each camera's clips go to its model's batcher, and the scores come back in order."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from agent.config import parse_config
from agent.live.app import Agent
from agent.live.runtime import ModelRuntime
from agent.live.sources import Camera
from agent.metrics import Metrics
from tests.videos import pattern_video

RUN_S = 0.8  # each model run: three clip periods of the live camera below


class Sink:
    """Keeps the events it is given; states, statuses, stats and announcements go nowhere."""

    def __init__(self) -> None:
        self.events: list = []

    def publish_event(self, event) -> None:
        self.events.append(event)

    def scored(self) -> list[float]:
        """The clip time of every event a clip caused (the end at shutdown comes without one)."""
        return [e.received_at for e in self.events if e.type != "end"]

    def publish_state(self, camera: str, label: str, on: bool) -> None: ...
    def publish_status(self, camera: str, online: bool) -> None: ...
    def publish_stats(self, stats: dict) -> None: ...
    def announce(self, camera, labels) -> None: ...

    async def __aenter__(self) -> Sink:
        return self

    async def __aexit__(self, *exc: object) -> None: ...


# Every scored clip gives one event: the first label is always above the start threshold, never below the end one,
# and updates are due at once.
EVERY_CLIP = {"threshold": 1e-9, "end_threshold": 0.0, "min_hits": 1, "update_s": 1e-9, "include": ["move_left"]}


def _run_agent(model, cameras: list[dict], seconds: float | None, fail: str | None = None) -> tuple:
    """Runs the agent with these cameras and a model that takes ``RUN_S`` a run; returns the clips the cameras handed
    on (seq, whether a run was in progress) and the times of the clips whose scores reached the tracker, in order.
    The camera named ``fail`` raises instead of giving clips."""
    submitted, running = [], threading.Event()

    class RecordingCamera(Camera):
        async def clips(self):
            if self.config.name == fail:
                raise RuntimeError(f"could not read {self.config.url.get_secret_value()}")
            async for clip in super().clips():
                submitted.append((clip.seq, running.is_set()))
                yield clip

    data = {"cameras": cameras, "models": {"m": {"path": str(model)}}, "metrics": {"enabled": False}}
    config = parse_config(data | {"events": EVERY_CLIP})
    runtime = ModelRuntime("m", config.models["m"])
    infer = runtime.infer

    def slow(inputs):
        running.set()
        time.sleep(RUN_S)
        try:
            return infer(inputs)
        finally:
            running.clear()

    runtime.infer = slow  # type: ignore[method-assign]
    metrics, sink = Metrics(), Sink()
    agent = Agent(config, metrics=metrics, sink=sink, runtimes={"m": runtime}, camera_factory=RecordingCamera)

    async def main():
        stop = asyncio.Event()
        if seconds is not None:
            asyncio.get_running_loop().call_later(seconds, stop.set)
        await asyncio.wait_for(agent.run(stop), 60)

    asyncio.run(main())
    return submitted, sink.scored(), metrics  # one event per scored clip: see ``EVERY_CLIP``


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return pattern_video(tmp_path_factory.mktemp("app") / "cam.mp4", 6, size="96x96", fps=15)


def test_a_live_cameras_next_clip_waits_in_the_batcher_newest_only(tiny_model, video):
    """While a clip runs, the camera's next clips go to the batcher (not held back until the result): the newest
    replaces the one waiting there, which counts as stale; scores reach the tracker in stream order."""
    camera = {"name": "cam", "url": str(video), "loop": True, "every_s": 0.25}
    submitted, scored, metrics = _run_agent(tiny_model, [camera], seconds=6)  # the first clip at ~2 s
    stale = metrics.value("actionstream_frames_dropped_total", camera="cam", reason="stale_clip")
    assert any(during_run for _, during_run in submitted), "no clip reached the batcher while one was running"
    assert len(scored) >= 3 and scored == sorted(set(scored)), scored
    assert stale >= len(scored)  # over two clip periods per run: at least one clip replaced per run
    assert len(scored) + stale <= len(submitted) <= len(scored) + stale + 2  # the rest: in flight at the stop


def test_a_consumer_paced_file_scores_every_clip_in_order_two_in_flight(tiny_model, video):
    """``realtime: false``: no clip is dropped, two are in the batcher at once (so they share runs), and the agent
    stops once the last clip's scores are applied."""
    camera = {"name": "cam", "url": str(video), "realtime": False, "every_s": 0.5}
    submitted, scored, metrics = _run_agent(tiny_model, [camera], seconds=None)
    assert metrics.value("actionstream_frames_dropped_total", camera="cam", reason="stale_clip") == 0
    assert [seq for seq, _ in submitted] == list(range(1, len(submitted) + 1)) and len(submitted) >= 6
    assert len(scored) == len(submitted) and scored == sorted(scored)
    assert metrics.value("actionstream_batch_size_sum", model="m") == len(submitted)
    assert metrics.value("actionstream_batch_size_count", model="m") <= len(submitted) / 2 + 1


def test_a_failing_pipeline_says_so_once_and_the_other_cameras_go_on(tiny_model, video, caplog):
    url = "rtsp://admin:Cam-Pa55word@127.0.0.1:9/stream"  # nothing listens: its reader just retries
    cameras = [{"name": "bad", "url": url}, {"name": "good", "url": str(video), "loop": True, "every_s": 0.5}]
    with caplog.at_level(logging.ERROR, logger="actionstream"):
        _, scored, _ = _run_agent(tiny_model, cameras, seconds=4, fail="bad")
    stopped = [r.getMessage() for r in caplog.records if "pipeline stopped" in r.getMessage()]
    assert stopped == [
        "camera bad: its pipeline stopped: RuntimeError: could not read rtsp://admin:***@127.0.0.1:9/stream"
    ]
    assert "Cam-Pa55word" not in caplog.text
    assert scored, "the good camera's clips were not scored"


def test_entries_that_share_a_stream_report_its_frames_in_the_stats():
    """The stats' frames_decoded of an entry is its stream's, counted once under the stream's first entry."""
    cameras = [{"name": n, "url": url} for n, url in (("door", "rtsp://h/1"), ("yard", "rtsp://h/1"), ("gate", "/g"))]
    agent = Agent(parse_config({"cameras": cameras, "models": {"m": {"path": "m.onnx"}}}))
    frames = "actionstream_frames_decoded_total"
    assert [agent._counted_as(c, frames) for c in ("door", "yard", "gate")] == ["door", "door", "gate"]
    assert agent._counted_as("yard", "actionstream_stream_reconnects_total") == "yard"  # every entry's own
