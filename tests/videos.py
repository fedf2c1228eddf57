"""Test videos made with the ffmpeg CLI: its moving test patterns encoded as H.264 yuv420p, as cameras send."""

from __future__ import annotations

import subprocess
from pathlib import Path


def pattern_video(
    path: Path, seconds: float, size: str = "320x240", fps: int = 25, pattern: str = "testsrc2", options=()
) -> Path:
    """``seconds`` of ffmpeg's ``pattern`` at ``size`` and ``fps`` written to ``path``; ``options``: more encoder
    arguments (GOP, preset)."""
    source = f"{pattern}=size={size}:rate={fps}"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", source, "-t", str(seconds), "-c:v", "libx264", *options,
         "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def walking_figure(path: Path, seconds: float = 8, fps: int = 25) -> Path:
    """A bright figure (64x96 px, feet at y 216) walking across a dark 320x240 hall, H.264: right from x 20 to 220
    in 4 s, then back, slowing down to turn (x = 20 + 100 (1 - cos(pi t / 4))). Its feet (x + 32) cross the middle of
    the frame at 2.1 s and again at 5.9 s."""
    walk = "20+100*(1-cos(PI*t/4))"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"color=c=0x202020:s=320x240:r={fps}:d={seconds}",
         "-f", "lavfi", "-i", f"color=c=white:s=64x96:r={fps}:d={seconds}",
         "-filter_complex", f"[0][1]overlay=x='{walk}':y=120:shortest=1",
         "-c:v", "libx264", "-g", str(fps), "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path
