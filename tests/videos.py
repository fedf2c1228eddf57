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
