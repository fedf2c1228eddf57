"""The regions benchmark runs every variant through the agent's own cameras and reports them (numbers are for bench/,
not tests)."""

from __future__ import annotations

import json

from bench import regions
from bench.report import tables
from tests.videos import pattern_video


def test_regions_bench_prints_json_lines_for_every_variant(tmp_path, capsys):
    video = pattern_video(tmp_path / "small.mp4", 3, "320x240", 25, "testsrc2")
    summary = regions.main(["--video", str(video), "--seconds", "0.6", "--warmup", "0.4", "--repeats", "1"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    variants = {r["variant"]: r for r in records if r["bench"] == "regions"}
    assert list(variants) == ["full", "region_quarter", "region_tenth", "shared_4", "separate_4"]
    assert (variants["shared_4"]["streams"], variants["shared_4"]["entries"]) == (1, 4)  # one decode
    assert (variants["separate_4"]["streams"], variants["separate_4"]["entries"]) == (4, 4)
    assert all(r["cpu_us_per_stream_frame"] and r["frames_sampled_per_run"] > 0 for r in variants.values())
    assert records[-1] == summary and summary["bench"] == "regions_summary"
    assert set(summary) >= {"region_vs_full", "shared_4_vs_one", "separate_4_vs_one"}
    assert "| shared_4 | 1 | 4 |" in tables(records)
