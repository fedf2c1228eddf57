"""Wiring choices the agent makes for its cameras."""

from __future__ import annotations

from agent.app import with_decoder_threads
from agent.config import parse_config


def _cameras(n: int, **camera) -> list:
    cameras = [{"name": f"cam{i}", "url": "rtsp://h/s", **camera} for i in range(n)]
    return parse_config({"cameras": cameras, "models": {"m": {"path": "m.onnx"}}}).cameras


def test_one_decoder_thread_per_camera_once_cameras_reach_the_cores():
    assert [c.decode_threads for c in with_decoder_threads(_cameras(3), cores=4)] == [None] * 3  # FFmpeg's choice
    assert [c.decode_threads for c in with_decoder_threads(_cameras(4), cores=4)] == [1] * 4
    assert [c.decode_threads for c in with_decoder_threads(_cameras(4, decode_threads=3), cores=4)] == [3] * 4
    assert [c.name for c in with_decoder_threads(_cameras(4), cores=4)] == ["cam0", "cam1", "cam2", "cam3"]
