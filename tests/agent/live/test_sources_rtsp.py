"""Against a real RTSP server: frames arrive, clips assemble, and the source survives server restarts."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np
import pytest
from prometheus_client import generate_latest

from agent.config import SourceConfig
from agent.live.sources import Camera
from agent.metrics import Metrics
from tests.rtsp_server import RtspProxy, RtspServer
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


def _entries(url: str) -> list:
    """Two camera entries on one RTSP URL, each with its own region (the left and the right half of the view)."""
    from agent.config import parse_config

    stream = {"transport": "udp", "open_timeout_s": 3, "read_timeout_s": 2, "stall_s": 3}
    stream |= {"backoff_initial_s": 0.5, "backoff_max_s": 2}
    data = {
        "cameras": [
            {"name": "door", "url": url, "region": [0.0, 0.0, 0.5, 1.0], "every_s": 0.5, **stream},
            {"name": "yard", "url": url, "region": [0.5, 0.0, 1.0, 1.0], "every_s": 0.4},  # the stream's settings
        ],
        "models": {"m": {"path": "unused.onnx"}},
    }
    return parse_config(data).cameras


def test_two_entries_on_one_rtsp_url_share_one_session_and_one_decoder(rtsp_server):
    """One RTSP session at the server (counted by a proxy in front of it), one decoding thread; each entry gets clips
    of its own region; the server killed, the stream reconnects once and both entries recover."""
    from agent.frames import Converter
    from agent.live.sources import Stream

    proxy = RtspProxy(rtsp_server.client_port)
    metrics = Metrics()
    door, yard = _entries(proxy.url())
    assert yard.transport == "udp"  # set on door, the stream's
    stream = Stream(door, metrics, cameras=["door", "yard"])
    value = metrics.value

    def decoders() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("source-")]

    def check_own_region(clip, config) -> None:
        assert clip.inputs["fast"].shape == (8, 64, 64, 3) and clip.inputs["fast"].std() > 10
        assert clip.region == pytest.approx(config.region)
        if clip.frame is not None:  # the clip's newest frame, as decoded: its last input is that frame's region
            expected = Converter(SPEC, region=config.region)(clip.frame)
            np.testing.assert_array_equal(clip.inputs["fast"][-1], expected)
            other = Converter(SPEC, region=(yard if config is door else door).region)(clip.frame)
            assert np.abs(clip.inputs["fast"][-1].astype(int) - other).mean() > 5

    async def scenario() -> None:
        async with Camera(door, SPEC, metrics, stream) as a, Camera(yard, SPEC, metrics, stream) as b:
            clips = await asyncio.gather(_next_clip(a, 20), _next_clip(b, 20))
            assert decoders() == ["source-door"]
            check_own_region(clips[0], door)
            check_own_region(clips[1], yard)
            assert (proxy.sessions, proxy.count("DESCRIBE"), proxy.count("PLAY")) == (1, 1, 1)
            rtsp_server.kill()
            await _until(lambda: value("actionstream_stream_up", camera="yard") == 0, 10)
            assert value("actionstream_stream_up", camera="door") == 0 and not a.up and not b.up
            rtsp_server.start()
            await _until(lambda: value("actionstream_stream_up", camera="door") == 1, 20)
            assert value("actionstream_stream_up", camera="yard") == 1 and a.up and b.up
            clips = await asyncio.gather(_next_clip(a, 10), _next_clip(b, 10))
            check_own_region(clips[0], door)
            check_own_region(clips[1], yard)
            assert decoders() == ["source-door"]

    try:
        asyncio.run(scenario())
    finally:
        proxy.close()
    assert proxy.count("PLAY") == 2  # one session before the kill, one after
    for camera in ("door", "yard"):
        assert value("actionstream_stream_reconnects_total", camera=camera) == 1
        assert value("actionstream_frames_sampled_total", camera=camera) > 0
    assert value("actionstream_frames_decoded_total", camera="door") > 0  # counted once, under the first entry
    assert metrics.registry.get_sample_value("actionstream_frames_decoded_total", {"camera": "yard"}) is None
