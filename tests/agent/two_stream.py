"""Small two-stream models (an RGB TSN and a flow TSN with the same labels, and one with other labels), exported
through export/to_onnx.py with random weights, and a short synthetic motion video: for the fusion tests."""

from __future__ import annotations

from pathlib import Path

from export import to_onnx

LABELS = ["move_left", "move_right", "still"]


def export(work: Path, arch: str, labels: list[str], *flags: str) -> Path:
    (work / f"{arch}.txt").write_text("\n".join(labels) + "\n")
    out = work / f"{arch}.onnx"
    argv = ["--arch", arch, "--depth", "18", "--width", "8", "--size", "64", "--window-s", "1", "--out", str(out)]
    assert to_onnx.main([*argv, "--labels", str(work / f"{arch}.txt"), *flags]) == 0
    return out


def two_stream_models(work: Path) -> dict[str, Path]:
    """``rgb`` (TSN, 4 segments over 1 s), ``flow`` (TSN on Farnebäck flow, 3 segments × 5 fields over 1 s) and
    ``other`` (SlowOnly with other labels)."""
    return {
        "rgb": export(work, "tsn_r50", LABELS, "--segments", "4"),
        "flow": export(work, "tsn_r50_flow", LABELS, "--flow-method", "farneback"),
        "other": export(work, "slowonly_r50_8x8", ["walk", "run", "still"]),
    }


def motion_video(work: Path) -> Path:
    """4 s of ``move_left`` at 96x72, 30 fps."""
    from agent.demo.synthetic import write_motion_clip

    return write_motion_clip(work / "move_left.mp4", "move_left", seconds=4.0, width=96, height=72, seed=3)
