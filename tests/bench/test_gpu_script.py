"""bench/gpu.sh, the one-call GPU measurement, in its CPU smoke mode: the same steps with tiny models."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_script_smoke_runs_its_steps_and_writes_json(tmp_path):
    out = tmp_path / "smoke.jsonl"
    env = os.environ | {"BENCH_ARGS": f"--only model_slowfast,e2e_saturated,e2e_1080p --no-plots --out {out}"}
    subprocess.run([str(ROOT / "bench" / "gpu.sh"), "--smoke"], cwd=ROOT, env=env, check=True, timeout=600)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = {r["bench"] for r in records}
    assert {"run", "model", "e2e", "e2e_summary"} <= kinds and "failed" not in kinds
    assert all(r["device"] for r in records)
    model = {(r["runtime"], r["batch"]) for r in records if r["bench"] == "model"}
    assert model == {(runtime, b) for runtime in ("ort", "torch") for b in (1, 8, 32)}
    e2e = [r for r in records if r["bench"] == "e2e"]
    assert [(r["cameras"], r["decode"]) for r in e2e] == [(2, "none"), (4, "none"), (2, "cpu"), (4, "cpu")]
    assert all(r["clips"] > 0 and r["efficiency"] > 0 and r["latency_ms_p99"] > 0 for r in e2e)
    assert all(r["frames_decoded_per_s"] > 0 for r in e2e if r["decode"] == "cpu")  # real files, NVDEC asked for


def test_bench_modules_document_their_command_line():
    from bench import __main__ as run_all
    from bench import e2e, model, offline

    for module in (run_all, e2e, model, offline):
        assert "python -m bench" in module.__doc__
