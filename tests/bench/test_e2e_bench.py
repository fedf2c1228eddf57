"""bench.e2e's summary: the chosen K measured again (``--repeats``), its efficiency the median of the runs."""

from __future__ import annotations

import json
import statistics

from bench import e2e


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
