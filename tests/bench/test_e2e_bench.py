"""bench.e2e's summary: the chosen K measured again (``--repeats``), its efficiency the median of the runs."""

from __future__ import annotations

import json
import statistics

import pytest

from agent.live.batcher import piece_rows
from bench import e2e
from bench.model import runtime_for
from tests.onnx_runs import record_runs
from tests.videos import pattern_video


def test_repeats_rerun_the_summary_k_and_report_the_median(tiny_model, tmp_path):
    out = tmp_path / "e2e.jsonl"
    argv = ["--model", str(tiny_model), "--synthetic", "--cameras", "1,2", "--every", "0.1", "--max-batch", "4"]
    argv += ["--seconds", "1", "--warmup", "0.3", "--repeats", "3", "--out", str(out)]
    summary = e2e.main(argv)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    sweep = [r for r in lines if r["bench"] == "e2e"]
    again = [r for r in lines if r["bench"] == "e2e_repeat"]
    assert [r["cameras"] for r in sweep] == [1, 2]
    chosen = next(r for r in sweep if r["cameras"] == summary["cameras"])
    assert [r["repeat"] for r in again] == [1, 2] and {r["cameras"] for r in again} == {summary["cameras"]}
    assert all(r["clips"] > 0 and r["efficiency"] > 0 for r in again)
    runs = summary["efficiency_runs"]
    assert runs == [chosen["efficiency"]] + [r["efficiency"] for r in again]
    assert summary["efficiency"] == round(statistics.median(runs), 3)
    assert lines[-1] == summary


def test_model_only_runs_its_workers_at_once_as_the_batcher_does(tiny_model):
    """The ceiling efficiency divides by: with ``workers: 2``, two threads run pieces of the batch back to back at
    the same time, as the batcher does."""
    runtime = runtime_for(tiny_model, "cpu", max_batch=32, workers=2)
    runs = record_runs(runtime)
    times = e2e.model_only(runtime, [32], seconds=0.2)
    assert set(times) == {32} and times[32] > 0
    assert {rows for _, rows, _, _ in runs} == {piece_rows(32, 2)} == {2}
    by_thread = {}
    for thread, _, start, end in runs:
        by_thread.setdefault(thread, []).append((start, end))
    assert len(by_thread) == 2
    a, b = by_thread.values()
    assert max(a[0][0], b[0][0]) < min(a[-1][1], b[-1][1]), "the two workers' runs did not overlap"


def test_auto_cameras_start_at_half_what_the_ceiling_serves_and_grow_by_about_15_percent():
    ceiling = {1: 0.1, 4: 0.2}  # 10 and 20 clips/s: the best, 20, serves 20 cameras at one clip a second
    ks = list(e2e.auto_ks(ceiling, every_s=1.0))
    assert ks[:6] == [10, 12, 14, 16, 18, 21]
    assert ks[-1] <= 160 < round(ks[-1] * 1.15)
    assert list(e2e.auto_ks({1: 1.0}, every_s=1.0))[:3] == [1, 2, 3]  # at least one more camera a step


def test_auto_sweep_stops_at_the_first_k_whose_throughput_did_not_grow(tiny_model, tmp_path):
    out = tmp_path / "e2e.jsonl"
    argv = ["--model", str(tiny_model), "--synthetic", "--every", "0.02", "--max-batch", "4"]
    summary = e2e.main([*argv, "--seconds", "1", "--warmup", "0.3", "--out", str(out)])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    best = max(r["clips_per_s"] for r in lines if r["bench"] == "e2e_model_only")
    sweep = [r for r in lines if r["bench"] == "e2e"]
    ks = [r["cameras"] for r in sweep]
    assert abs(ks[0] - best * 0.02 / 2) <= 1  # half the cameras the ceiling serves (its clips/s are rounded)
    from_first = e2e.auto_ks({1: 1 / (2 * ks[0])}, every_s=1.0)  # a ceiling that serves 2 * ks[0] cameras
    assert ks == [k for k, _ in zip(from_first, ks, strict=False)]  # then ~15 % a step
    rates = [r["clips_per_s"] for r in sweep]
    grew = [rates[i] >= 1.05 * max(rates[:i]) for i in range(1, len(rates))]
    assert grew == [True] * (len(rates) - 2) + [False], rates
    assert summary["cameras"] in ks


@pytest.mark.parametrize("device", ["cpu", "openvino"])
def test_each_line_says_where_the_cpu_went(tiny_model, tmp_path, device):
    """Cameras' threads (reading, decoding, converting), the inference workers (ONNX Runtime's CPU provider runs
    each single-threaded piece on its worker; OpenVINO on its own stream threads, "native", while the worker
    waits) and the event loop: together the whole process; a synthetic run has no camera thread."""
    video = pattern_video(tmp_path / "cam.mp4", 4, size="160x120", fps=15)
    argv = ["--model", str(tiny_model), "--cameras", "3", "--every", "0.25", "--max-batch", "4", "--workers", "2"]
    argv += ["--decode-threads", "1", "--seconds", "2", "--warmup", "0.5", "--device", device]
    row = e2e.main([*argv, "--video", str(video), "--out", str(tmp_path / "decode.jsonl")])
    line = _lines(tmp_path / "decode.jsonl", "e2e")[0]
    assert row["cameras"] == 3 and line["frames_decoded_per_s"] > 30 and line["provider"] == device
    groups = [line[f"cpu_percent_{g}"] for g in e2e.THREAD_GROUPS]
    engine = "inference" if device == "cpu" else "native"
    assert line["cpu_percent_cameras"] > 0 and line[f"cpu_percent_{engine}"] > 0, line
    assert abs(sum(groups) - line["cpu_percent"]) <= 0.1 * line["cpu_percent"] + 3, line  # every thread, once
    per_frame = 1e4 * line["cpu_percent_cameras"] / line["frames_decoded_per_s"]  # µs of camera CPU per frame
    assert abs(line["camera_cpu_us_per_frame"] - per_frame) <= 0.05 * per_frame, line
    share = (line["cpu_percent_inference"] + line["cpu_percent_native"]) / line["model_only_cpu_percent"]
    assert abs(share * line["inference_speed_per_cpu"] - line["efficiency"]) <= 0.05 * line["efficiency"], line

    e2e.main([*argv, "--synthetic", "--out", str(tmp_path / "synthetic.jsonl")])
    synthetic = _lines(tmp_path / "synthetic.jsonl", "e2e")[0]
    assert synthetic["cpu_percent_cameras"] == 0 and synthetic["camera_cpu_us_per_frame"] is None, synthetic
    assert synthetic[f"cpu_percent_{engine}"] > 0, synthetic


def _lines(path, bench: str) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["bench"] == bench]
