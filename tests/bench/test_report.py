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


def test_where_the_cpu_went_has_a_row_per_line_that_measured_it():
    split = {"cpu_percent_cameras": 16.5, "cpu_percent_inference": 172.5, "cpu_percent_loop": 5.1}
    split |= {"cpu_percent_native": 0.0, "camera_cpu_us_per_frame": 613.4, "model_only_cpu_percent": 198.0}
    split |= {"inference_speed_per_cpu": 0.986}
    rows = [_e2e("motion_demo.onnx", 16, 0.84), _e2e("motion_demo.onnx", 18, 0.86) | split]  # the first: 0.6.0
    lines = tables(rows).splitlines()
    cpu = [line for line in lines if "/ 172.5 /" in line]
    assert cpu == ["| realtime x2 | 18 | 16.5 / 172.5 / 5.1 / 0.0 | 613.4 | 198.0 | 0.986 | 0.86 |"]
    assert not any(line.startswith("| realtime x2 | 16 | 16.5") for line in lines)
