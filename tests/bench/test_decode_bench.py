"""The decode benchmark runs and reports every variant and the tracked ratios (numbers are for bench/, not tests)."""

from __future__ import annotations

import json

from bench import decode
from tests.videos import pattern_video


def test_decode_bench_prints_json_lines(tmp_path, capsys):
    video = pattern_video(tmp_path / "small.mp4", 2, fps=30)
    decode.main([str(video), "--repeats", "1"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_variant = {r["variant"]: r for r in records}
    assert set(by_variant) == {"ffmpeg_null", "pyav_decode", "pyav_convert_all", "pyav_convert_sampled", "summary"}
    assert all(by_variant[v]["frames"] == 60 for v in by_variant if v != "summary")
    assert by_variant["summary"]["sampled_vs_ffmpeg"] > 0
