"""bench.cpu_backends: ONNX Runtime's CPU provider and OpenVINO through the same end-to-end sweep in one run, their
saturated K again in alternating rounds, and the line ``make bench`` ends with."""

from __future__ import annotations

import argparse
import json
import statistics

from bench import __main__ as run_all
from bench import cpu_backends
from bench.report import tables


def test_both_engines_sweep_then_alternate_and_the_speedup_is_the_rounds_median_ratio(tiny_model, tmp_path):
    out = tmp_path / "backends.jsonl"
    argv = ["--models", str(tiny_model), "--cameras", "1,2", "--workers", "2", "--max-batch", "4", "--rounds", "2"]
    argv += ["--seconds", "1", "--warmup", "2.5"]  # the first clip comes after the model's span, 2.1 s
    result = cpu_backends.main([*argv, "--out", str(out)])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    summaries = [r for r in lines if r["bench"] == "e2e_summary"]
    assert [r["provider"] for r in summaries] == ["cpu", "openvino"]  # ONNX Runtime's CPU provider, then OpenVINO
    (record,) = [r for r in lines if r["bench"] == "cpu_backends"]
    assert record == result["models"][str(tiny_model)] and result["speedup"] is None  # no demo model in this run
    for prefix, summary in zip(("ort", "openvino"), summaries, strict=True):
        sweep = [r for r in lines if r["bench"] == "e2e" and r["provider"] == summary["provider"]]
        assert [r["cameras"] for r in sweep] == [1, 2] and all(r["clips"] > 0 and r["workers"] == 2 for r in sweep)
        assert all(r["decode"] == "cpu" and r["frames_decoded_per_s"] > 0 for r in sweep)  # real cameras
        saturated = max(sweep, key=lambda r: r["clips_per_s"])
        assert record[f"{prefix}_cameras"] == summary["saturated_cameras"] == saturated["cameras"]
        assert record[f"{prefix}_sweep_max_clips_per_s"] == saturated["clips_per_s"]
    rounds = [r for r in lines if r["bench"] == "cpu_backends_round"]
    assert [(r["round"], r["provider"]) for r in rounds] == [(1, "cpu"), (1, "openvino"), (2, "cpu"), (2, "openvino")]
    assert all(r["cameras"] == record["ort_cameras" if r["provider"] == "cpu" else "openvino_cameras"] for r in rounds)
    ort, ov = rounds[::2], rounds[1::2]
    assert record["ort_e2e_clips_per_s"] == round(statistics.median(r["clips_per_s"] for r in ort), 3)
    assert record["openvino_e2e_clips_per_s"] == round(statistics.median(r["clips_per_s"] for r in ov), 3)
    ratios = [b["clips_per_s"] / a["clips_per_s"] for a, b in zip(ort, ov, strict=True)]
    assert record["e2e_speedup"] == round(statistics.median(ratios), 2) and record["e2e_speedup"] > 0
    assert f"| {tiny_model.name} | 2 | " in tables(lines)


def test_make_bench_runs_the_comparison_and_ends_with_both_lines(tmp_path):
    args = argparse.Namespace(gpu=False, smoke=False)
    names = [name for name, _ in run_all.steps(args, tmp_path / "x.jsonl")]
    assert names.index("model") < names.index("e2e") < names.index("cpu_backends")
    assert cpu_backends.parser().parse_args([]).models == "demo,slowfast_r50_4x16"
    results = {"e2e": {"efficiency": 0.934}, "cpu_backends": {"speedup": 2.456}}
    assert run_all.summary_lines(results) == ["efficiency: 0.93", "cpu backend speedup: 2.46"]
    assert run_all.summary_lines({"e2e": {"efficiency": 0.9}}) == ["efficiency: 0.90"]
