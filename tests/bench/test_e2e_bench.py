"""bench.e2e's summary: the chosen K measured again (``--repeats``), its efficiency the median of the runs."""

from __future__ import annotations

import json
import statistics

from agent.runtime import piece_rows
from bench import e2e
from bench.model import runtime_for
from tests.onnx_runs import record_runs


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
