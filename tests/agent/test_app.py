"""The wiring (agent/app.py): each camera's clips go to its model's batcher, and the scores come back in order."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from agent import app
from agent.config import parse_config
from agent.events import EventTracker
from agent.metrics import Metrics
from agent.runtime import Batcher, ModelRuntime
from tests.videos import pattern_video

RUN_S = 0.8  # each model run: three clip periods of the live camera below


class Sink:
    """Takes everything the pipeline publishes and keeps nothing."""

    def publish_event(self, event) -> None: ...
    def publish_state(self, camera: str, label: str, on: bool) -> None: ...
    def publish_status(self, camera: str, online: bool) -> None: ...
    def publish_stats(self, stats: dict) -> None: ...
    def announce(self, camera, labels) -> None: ...

    async def __aenter__(self) -> Sink:
        return self

    async def __aexit__(self, *exc: object) -> None: ...


def _run_agent(monkeypatch, model, cameras: list[dict], seconds: float | None) -> tuple[list, list, Metrics]:
    """Runs the agent with these cameras and a model that takes ``RUN_S`` a run; returns the clips handed to the batcher
    (seq, whether a run was in progress) and the seqs whose scores reached the tracker, in order."""
    submitted, scored, running = [], [], threading.Event()

    class RecordingBatcher(Batcher):
        def submit(self, clip, boxes=None, replace=False):
            submitted.append((clip.seq, running.is_set()))
            return super().submit(clip, boxes, replace)

    class RecordingTracker(EventTracker):
        def update(self, scores, **kw):
            scored.append(kw["clip_end"])
            return super().update(scores, **kw)

    config = parse_config({"cameras": cameras, "models": {"m": {"path": str(model)}}, "metrics": {"enabled": False}})
    runtime = ModelRuntime("m", config.models["m"])
    infer = runtime.infer

    def slow(inputs):
        running.set()
        time.sleep(RUN_S)
        try:
            return infer(inputs)
        finally:
            running.clear()

    runtime.infer = slow
    monkeypatch.setattr(app, "Batcher", RecordingBatcher)
    monkeypatch.setattr(app, "EventTracker", RecordingTracker)
    metrics = Metrics()
    agent = app.Agent(config, metrics=metrics, sink=Sink())
    agent.runtimes = {"m": runtime}

    async def main():
        stop = asyncio.Event()
        if seconds is not None:
            asyncio.get_running_loop().call_later(seconds, stop.set)
        await asyncio.wait_for(agent.run(stop), 60)

    asyncio.run(main())
    return submitted, scored, metrics


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return pattern_video(tmp_path_factory.mktemp("app") / "cam.mp4", 6, size="96x96", fps=15)


def test_a_live_cameras_next_clip_waits_in_the_batcher_newest_only(monkeypatch, tiny_model, video):
    """While a clip runs, the camera's next clips go to the batcher (not held back until the result): the newest
    replaces the one waiting there, which counts as stale; scores reach the tracker in stream order."""
    camera = {"name": "cam", "url": str(video), "loop": True, "every_s": 0.25}
    submitted, scored, metrics = _run_agent(monkeypatch, tiny_model, [camera], seconds=6)  # the first clip at ~2 s
    stale = metrics.value("actionstream_frames_dropped_total", camera="cam", reason="stale_clip")
    assert any(during_run for _, during_run in submitted), "no clip reached the batcher while one was running"
    assert len(scored) >= 3 and scored == sorted(set(scored)), scored
    assert stale >= len(scored)  # over two clip periods per run: at least one clip replaced per run
    assert len(scored) + stale <= len(submitted) <= len(scored) + stale + 2  # the rest: in flight at the stop


def test_a_consumer_paced_file_scores_every_clip_in_order_two_in_flight(monkeypatch, tiny_model, video):
    """``realtime: false``: no clip is dropped, two are in the batcher at once (so they share runs), and the agent
    stops once the last clip's scores are applied."""
    camera = {"name": "cam", "url": str(video), "realtime": False, "every_s": 0.5}
    submitted, scored, metrics = _run_agent(monkeypatch, tiny_model, [camera], seconds=None)
    assert metrics.value("actionstream_frames_dropped_total", camera="cam", reason="stale_clip") == 0
    assert [seq for seq, _ in submitted] == list(range(1, len(submitted) + 1)) and len(submitted) >= 6
    assert len(scored) == len(submitted) and scored == sorted(scored)
    assert metrics.value("actionstream_batch_size_sum", model="m") == len(submitted)
    assert metrics.value("actionstream_batch_size_count", model="m") <= len(submitted) / 2 + 1


def test_a_failing_pipeline_says_so_once_and_the_other_cameras_go_on(monkeypatch, tiny_model, video, caplog):
    url = "rtsp://admin:Cam-Pa55word@127.0.0.1:9/stream"  # nothing listens: its reader just retries

    class Camera(app.Camera):
        async def clips(self):
            if self.config.name == "bad":
                raise RuntimeError(f"could not read {url}")
            async for clip in super().clips():
                yield clip

    monkeypatch.setattr(app, "Camera", Camera)
    cameras = [{"name": "bad", "url": url}, {"name": "good", "url": str(video), "loop": True, "every_s": 0.5}]
    with caplog.at_level(logging.ERROR, logger="actionstream"):
        _, scored, _ = _run_agent(monkeypatch, tiny_model, cameras, seconds=4)
    stopped = [r.getMessage() for r in caplog.records if "pipeline stopped" in r.getMessage()]
    assert stopped == [
        "camera bad: its pipeline stopped: RuntimeError: could not read rtsp://admin:***@127.0.0.1:9/stream"
    ]
    assert "Cam-Pa55word" not in caplog.text
    assert scored, "the good camera's clips were not scored"
