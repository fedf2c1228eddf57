"""bench/gpu.sh, the one-call GPU measurement, in its CPU smoke mode: the same steps with tiny models."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_script_smoke_runs_its_steps_and_writes_json(tmp_path):
    out = tmp_path / "smoke.jsonl"
    steps = "model_slowfast,e2e_saturated,e2e_convert,convert"
    env = os.environ | {"BENCH_ARGS": f"--only {steps} --no-plots --out {out}"}
    run = subprocess.run([str(ROOT / "bench" / "gpu.sh"), "--smoke"], cwd=ROOT, env=env, check=True, timeout=600,
                         capture_output=True, text=True)  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = {r["bench"] for r in records}
    assert {"run", "model", "e2e", "e2e_summary", "convert", "convert_camera"} <= kinds and "failed" not in kinds
    assert all(r["device"] for r in records)
    model = {(r["runtime"], r["batch"]) for r in records if r["bench"] == "model"}
    assert model == {(runtime, b) for runtime in ("ort", "torch") for b in (1, 8, 32)}
    e2e = [r for r in records if r["bench"] == "e2e"]
    assert [(r["cameras"], r["decode"], r["convert"]) for r in e2e] == [
        (2, "cpu", "cpu"), (4, "cpu", "cpu"),  # 1080p25 cameras (smoke: 160x120), convert: cpu
        (2, "cpu", "graph-cpu"), (4, "cpu", "graph-cpu"),  # convert: graph (on the GPU: graph-cuda-on-device)
        (2, "none", "none"), (4, "none", "none"),  # no decode: the model side
    ]  # fmt: skip
    assert all(r["clips"] > 0 and r["efficiency"] > 0 and r["latency_ms_p99"] > 0 for r in e2e)
    assert all(r["frames_decoded_per_s"] > 0 and r["cpu_cores"] > 0 for r in e2e if r["decode"] == "cpu")
    assert all("gpu_util_percent" in r for r in e2e)  # null without nvidia-smi
    summaries = [r for r in records if r["bench"] == "e2e_summary" and r["convert"] != "none"]
    assert [s["convert"] for s in summaries] == ["cpu", "graph-cpu"]
    assert all(s["p99_target_ms"] == 500 and "max_cameras_within_target" in s for s in summaries)
    for mode in ("cpu", "graph"):  # the lines the run ends with: the largest K within p99 500 ms, each way
        assert f"convert {mode}: " in run.stdout and "cameras within p99 500 ms" in run.stdout
    variants = {r["variant"] for r in records if r["bench"] == "convert"}
    assert {"swscale", "graph_cpu"} <= variants


def test_bench_modules_document_their_command_line():
    from bench import __main__ as run_all
    from bench import e2e, model, offline

    for module in (run_all, e2e, model, offline):
        assert "python -m bench" in module.__doc__
