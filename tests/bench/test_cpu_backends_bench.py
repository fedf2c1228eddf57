"""bench.cpu_backends: ONNX Runtime's CPU provider and OpenVINO through the same end-to-end sweep in one run, and
the line ``make bench`` ends with."""

from __future__ import annotations

import argparse
import json

from bench import __main__ as run_all
from bench import cpu_backends
from bench.report import tables


def test_both_engines_run_the_same_sweep_and_the_speedup_is_their_ratio(tiny_model, tmp_path):
    out = tmp_path / "backends.jsonl"
    argv = ["--models", str(tiny_model), "--cameras", "1,2", "--workers", "2", "--max-batch", "4"]
    argv += ["--seconds", "1", "--warmup", "2.5"]  # the first clip comes after the model's span, 2.1 s
    result = cpu_backends.main([*argv, "--out", str(out)])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    sweeps = {r["provider"]: r for r in lines if r["bench"] == "e2e_summary"}
    assert set(sweeps) == {"cpu", "openvino"}  # ONNX Runtime's CPU provider first, then OpenVINO
    assert [r["provider"] for r in lines if r["bench"] == "e2e_summary"] == ["cpu", "openvino"]
    for provider, summary in sweeps.items():
        sweep = [r for r in lines if r["bench"] == "e2e" and r["provider"] == provider]
        assert [r["cameras"] for r in sweep] == [1, 2] and all(r["clips"] > 0 and r["workers"] == 2 for r in sweep)
        assert all(r["decode"] == "cpu" and r["frames_decoded_per_s"] > 0 for r in sweep)  # real cameras
        assert summary["max_clips_per_s"] == max(r["clips_per_s"] for r in sweep)
        ceiling = [r["clips_per_s"] for r in lines if r["bench"] == "e2e_model_only" and r["provider"] == provider]
        assert summary["ceiling_clips_per_s"] == max(ceiling)
    (record,) = [r for r in lines if r["bench"] == "cpu_backends"]
    assert record == result["models"][str(tiny_model)] and result["speedup"] is None  # no demo model in this run
    for prefix, provider in (("ort", "cpu"), ("openvino", "openvino")):
        assert record[f"{prefix}_e2e_clips_per_s"] == sweeps[provider]["max_clips_per_s"]
        assert record[f"{prefix}_model_only_clips_per_s"] == sweeps[provider]["ceiling_clips_per_s"]
    ort, ov = record["ort_e2e_clips_per_s"], record["openvino_e2e_clips_per_s"]
    assert record["e2e_speedup"] == round(ov / ort, 2)
    assert f"| {tiny_model.name} | 2 | " in tables(lines)


def test_make_bench_runs_the_comparison_and_ends_with_both_lines(tmp_path):
    args = argparse.Namespace(gpu=False, smoke=False)
    names = [name for name, _ in run_all.steps(args, tmp_path / "x.jsonl")]
    assert names.index("model") < names.index("e2e") < names.index("cpu_backends")
    assert cpu_backends.parser().parse_args([]).models == "demo,slowfast_r50_4x16"
    results = {"e2e": {"efficiency": 0.934}, "cpu_backends": {"speedup": 2.456}}
    assert run_all.summary_lines(results) == ["efficiency: 0.93", "cpu backend speedup: 2.46"]
    assert run_all.summary_lines({"e2e": {"efficiency": 0.9}}) == ["efficiency: 0.90"]
