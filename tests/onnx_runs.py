"""Watching a ModelRuntime's ONNX Runtime runs: which thread ran how many rows, and when."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace


def record_runs(runtime) -> list[tuple[int, int, float, float]]:
    """(thread, rows, start, end) of each ``runtime.session.run`` from now on (perf_counter seconds)."""
    runs: list[tuple[int, int, float, float]] = []
    session_run = runtime.session.run

    def run(names, inputs):
        t0 = time.perf_counter()
        out = session_run(names, inputs)
        runs.append((threading.get_ident(), len(next(iter(inputs.values()))), t0, time.perf_counter()))
        return out

    runtime.session = SimpleNamespace(run=run)
    return runs
