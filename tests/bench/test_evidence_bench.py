"""The evidence benchmark runs both measurements and reports them (numbers are for bench/, not tests)."""

from __future__ import annotations

import json

from bench import evidence


def test_evidence_bench_prints_json_lines(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"bench": "e2e_summary", "decode": "software", "cameras": 2}) + "\n")
    evidence.main(["--results", str(results), "--seconds", "2", "--warmup", "0.5", "--repeats", "1",
                   "--ring-seconds", "4", "--ring-size", "320x240", "--pre-s", "1"])  # fmt: skip
    cpu, ring = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert cpu["bench"] == "evidence_cpu" and cpu["cameras"] == 2
    assert cpu["camera_cpu_us_per_frame_off"] is not None and cpu["clip_bytes_per_camera_s"] > 0
    assert ring["bench"] == "evidence_ring" and 0 < ring["ring_bytes_max"] <= ring["python_peak_mb"] * 1e6 * 1.5
    assert ring["history_s"] == 4.0
