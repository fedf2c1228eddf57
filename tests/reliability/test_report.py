"""The table: docs/RELIABILITY.md is generated from the suite's results and its table matches them (runs last)."""

from __future__ import annotations

import pytest

from tests.reliability import report
from tests.reliability.conftest import SESSION_ROWS


def test_committed_table_matches_the_results():
    """Every row on record (this session's rows replace earlier ones) is in the committed table, word for word."""
    results = report.load()
    if not results["rows"]:
        pytest.skip("no results recorded yet: run the whole of tests/reliability")
    assert set(SESSION_ROWS) <= set(results["rows"])
    doc = report.DOC.read_text() if report.DOC.exists() else ""
    problems = report.differences(results, doc, complete=True)
    assert not problems, (
        "docs/RELIABILITY.md does not match the results; if the change is intended, regenerate it with "
        "`python -m tests.reliability.report`:\n" + "\n".join(problems)
    )


def test_renderer_round_trip():
    """What the renderer writes, the checker reads back row for row."""
    rows = {
        "1|a | b": {"item": 1, "case": "a | b", "expected": "e", "observed": "o"},
        "4|c": {"item": 4, "case": "c", "expected": "e2", "observed": "o2"},
    }
    results = {"rows": rows, "measurements": {"x": {"value": "1 s", "test": "t"}}}
    doc = report.render(results)
    assert report.differences(results, doc, complete=True) == []
    changed = {"rows": {**rows, "4|c": {**rows["4|c"], "observed": "other"}}, "measurements": {}}
    assert len(report.differences(changed, doc, complete=True)) == 1
    assert len(report.differences(results, doc.replace("| 4. ", "| 3. "), complete=True)) == 2
