from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real videos, MMAction2 references); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: this test needs the shared real-data fixtures")
    return SHARED_DATA


TINY_LABELS = ["move_left", "move_right", "move_up", "move_down", "still"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small random-weight SlowFast exported through export/to_onnx.py (the real path, seconds to build)."""
    from export import to_onnx

    work = tmp_path_factory.mktemp("tiny-model")
    labels = work / "labels.txt"
    labels.write_text("\n".join(TINY_LABELS) + "\n")
    out = work / "slowfast_tiny.onnx"
    argv = ["--arch", "slowfast_r50_4x16", "--depth", "18", "--width", "8", "--size", "64"]
    assert to_onnx.main([*argv, "--labels", str(labels), "--out", str(out)]) == 0
    return out
