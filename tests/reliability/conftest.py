"""The reliability suite's recorder: each test states the fault it tried, what should happen and what did.

Rows go to ``.cache/reliability/results.json`` (merged across runs, so a partial run updates only its rows);
``python -m tests.reliability.report`` renders docs/RELIABILITY.md from them, and ``test_report.py`` (moved to run
last) checks that the committed table matches the results.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.reliability import report
from tests.videos import pattern_video


class Recorder:
    """Records the rows of one test (``test``: its node id, kept in the results file but not in the table)."""

    def __init__(self, test: str) -> None:
        self.test = test

    def row(self, item: int, case: str, expected: str, observed: str) -> None:
        row = report.Row(item, case, expected, observed)
        SESSION_ROWS[row.key] = row
        results = report.load()
        results["rows"][row.key] = {**dataclasses.asdict(row), "test": self.test}
        report.save(results)

    def measure(self, key: str, value: str) -> None:
        results = report.load()
        results.setdefault("measurements", {})[key] = {"value": value, "test": self.test}
        report.save(results)


SESSION_ROWS: dict[str, report.Row] = {}  # recorded in this session
_DESELECTED: list = []


@pytest.fixture
def record(request) -> Recorder:
    return Recorder(request.node.nodeid)


def pytest_deselected(items):
    _DESELECTED.extend(items)


def pytest_collection_finish(session):
    """Forget what the tests about to run recorded before (they record again) and what vanished tests recorded."""
    running = {i.nodeid for i in session.items if "reliability/" in i.nodeid}
    if not running or session.config.option.collectonly:
        return
    existing = {i.nodeid for i in [*session.items, *_DESELECTED]}
    collected_files = {n.split("::")[0] for n in existing}

    def keep(entry) -> bool:
        test = entry.get("test", "") if isinstance(entry, dict) else ""
        return test not in running and (test in existing or test.split("::")[0] not in collected_files)

    results = report.load()
    for part in ("rows", "measurements"):
        results[part] = {key: entry for key, entry in results.get(part, {}).items() if keep(entry)}
    report.save(results)


def pytest_collection_modifyitems(config, items):
    """The table check runs after every other reliability test."""
    last = [i for i in items if "reliability/test_report.py" in i.nodeid]
    items[:] = [i for i in items if i not in last] + last


@pytest.fixture(scope="session")
def stream_file(tmp_path_factory):
    """20 s of a moving test pattern (320x240, 25 fps, H.264, GOP 0.5 s): a cheap camera when played looping."""
    path = tmp_path_factory.mktemp("stream") / "pattern.mp4"
    return pattern_video(path, 20, options=["-preset", "ultrafast", "-g", "12"])
