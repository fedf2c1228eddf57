"""The conversion benchmark: swscale and the conversion graph on the same decoded frames and through a camera's
thread (numbers are for bench/, not tests)."""

from __future__ import annotations

import json

from bench import convert
from bench.report import tables


def test_convert_bench_prints_json_lines_for_each_source_and_variant(capsys):
    argv = ["--small", "--frames", "4", "--seconds", "0.2", "--camera-seconds", "0.5", "--warmup", "0.3"]
    summary = convert.main([*argv, "--repeats", "1"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    lines = {(r["source"], r["variant"]): r for r in records if r["bench"] == "convert"}
    assert {(s, v) for s in ("180p_to_224", "120p_to_96") for v in ("swscale", "graph_cpu")} <= set(lines)
    assert all(r["cpu_us_per_frame"] > 0 and r["wall_us_per_frame"] > 0 for r in lines.values())
    camera = {r["variant"]: r for r in records if r["bench"] == "convert_camera"}
    assert {"cpu", "graph_cpu"} <= set(camera) and all(r["cpu_us_per_decoded_frame"] > 0 for r in camera.values())
    assert records[-1] == summary and summary["graph_cpu_vs_swscale"] > 0 and summary["camera_graph_vs_cpu"] > 0
    assert "| 120p_to_96 | graph_cpu |" in tables(records)
