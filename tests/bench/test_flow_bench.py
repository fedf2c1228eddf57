"""The flow benchmark: decode, conversion and flow per field for each size and method asked for (numbers are for
bench/, not tests)."""

from __future__ import annotations

import pytest

from bench import flow, report

pytest.importorskip("cv2")


def test_flow_bench_reports_decode_convert_and_each_method(capsys):
    records = flow.main(["--sizes", "demo", "--methods", "farneback,dis", "--fields", "2", "--repeats", "1"])
    stages = [(r["stage"], r.get("method"), r.get("threads")) for r in records]
    assert stages[:2] == [("decode", None, None), ("convert", None, None)]
    assert {(m, t > 0) for s, m, t in stages[2:]} == {("farneback", True), ("dis", True)}
    assert len(stages) == 2 + 2 * 2  # each method with OpenCV's default threads and with one
    assert all(r["size"] == "demo" and r["flow_size"] == "147x110" for r in records)
    assert all(r.get("ms_per_frame", r.get("ms_per_field", 0)) > 0 for r in records)
    table = report.tables([dict(r, bench="flow") for r in records])
    assert "| decode (per frame) |" in table and "| flow dis, 1 thread(s) |" in table
