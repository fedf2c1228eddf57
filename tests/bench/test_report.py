"""bench.report's tables: one row per measured point, end-to-end sweeps named by mode, workers and model."""

from __future__ import annotations

from bench.report import tables


def _e2e(model: str, cameras: int, efficiency: float) -> dict:
    numbers = dict.fromkeys(["clips_per_s", "mean_batch", "batch_ms_mean", "stale_clips_dropped", "cpu_percent"], 1)
    numbers |= dict.fromkeys(["cpu_percent_per_camera", "rss_mb_per_camera", "model_only_clips_per_s"], 1)
    numbers |= {f"latency_ms_{q}": 1 for q in ("p50", "p95", "p99")} | {"p99_over_batch": 1}
    return (
        {"bench": "e2e", "mode": "realtime", "workers": 2, "model": model, "cameras": cameras}
        | numbers
        | {"efficiency": efficiency}
    )


def test_e2e_rows_name_a_model_other_than_the_demo():
    rows = [_e2e("motion_demo.onnx", 64, 0.85), _e2e("wide.onnx", 24, 0.93)]
    lines = tables(rows).splitlines()
    assert any(line.startswith("| realtime x2 | 64 |") and "| 0.85 |" in line for line in lines)
    assert any(line.startswith("| realtime x2 wide.onnx | 24 |") and "| 0.93 |" in line for line in lines)
