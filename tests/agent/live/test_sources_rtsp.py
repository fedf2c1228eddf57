"""Against a real RTSP server: frames arrive, clips assemble, and the source survives server restarts."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import generate_latest

from agent.config import SourceConfig
from agent.live.sources import Camera
from agent.metrics import Metrics
from tests.rtsp_server import RtspServer
from tests.specs import make_spec

PASSWORD = "s3cr3t-Pa55"
SPEC = make_spec(
    [{"name": "slow", "frames": 2, "stride_s": 0.4}, {"name": "fast", "frames": 8, "stride_s": 0.1}],
    size=64,
    resize_short=72,
)


@pytest.fixture
def rtsp_server():
    server = RtspServer()
    server.start()
    yield server
    server.kill()


def _config(url: str) -> SourceConfig:
    return SourceConfig(
        name="door",
        url=url,
        open_timeout_s=3,
        read_timeout_s=2,
        stall_s=3,
        backoff_initial_s=0.5,
        backoff_max_s=2,
        every_s=0.5,
    )


async def _next_clip(camera: Camera, timeout: float):
    return await asyncio.wait_for(anext(aiter(camera.clips())), timeout)


async def _until(predicate, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def test_rtsp_clips_and_reconnects_after_three_restarts(rtsp_server, caplog):
    caplog.set_level(logging.DEBUG)
    metrics = Metrics()
    config = _config(rtsp_server.url("admin", PASSWORD))
    value = metrics.value

    async def scenario() -> list[float]:
        waits = []
        async with Camera(config, SPEC, metrics) as camera:
            clip = await _next_clip(camera, 20)
            assert clip.inputs["fast"].shape == (8, 64, 64, 3)
            assert clip.inputs["slow"].shape == (2, 64, 64, 3)
            assert (clip.inputs["slow"] == clip.inputs["fast"][::4]).all()
            assert clip.inputs["fast"].std() > 10  # real pixels, not an empty ring
            for _ in range(3):
                rtsp_server.kill()
                await _until(lambda: value("actionstream_stream_up", camera="door") == 0, 10)
                rtsp_server.start()
                waits.append(await _until(lambda: value("actionstream_stream_up", camera="door") == 1, 20))
                await _next_clip(camera, 10)
        return waits

    waits = asyncio.run(scenario())
    backoff_cap = config.backoff_max_s * 1.2
    assert all(w <= backoff_cap + 5 for w in waits), waits
    assert value("actionstream_stream_reconnects_total", camera="door") == 3
    assert value("actionstream_frames_decoded_total", camera="door") > 0
    assert value("actionstream_frames_sampled_total", camera="door") > 0

    exposition = generate_latest(metrics.registry).decode()
    assert PASSWORD not in caplog.text and PASSWORD not in exposition
    assert "admin:***@127.0.0.1" in caplog.text  # the redacted form is what gets logged
