"""Procedurally rendered motion clips: a textured square moving over a noisy background."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

MOTIONS = {"move_left": (-1, 0), "move_right": (1, 0), "move_up": (0, -1), "move_down": (0, 1), "still": (0, 0)}


def write_motion_clip(
    path: str | Path,
    motion: str,
    *,
    seconds: float = 4.0,
    fps: int = 25,
    width: int = 320,
    height: int = 240,
    seed: int = 0,
) -> Path:
    """Write an H.264 MP4 in which a square performs ``motion`` (one of :data:`MOTIONS`)."""
    rng = np.random.default_rng(seed)
    dx, dy = MOTIONS[motion]
    background = rng.integers(40, 90, size=(height, width, 3), dtype=np.uint8)
    colour = rng.integers(120, 255, size=3, dtype=np.uint8)
    side = height // 4
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(seconds * fps)
    speed = (min(width, height) - side) / frames
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            image = background + rng.integers(0, 8, size=background.shape, dtype=np.uint8)
            x = int((width - side) / 2 + dx * (t - frames / 2) * speed)
            y = int((height - side) / 2 + dy * (t - frames / 2) * speed)
            image[y : y + side, x : x + side] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
