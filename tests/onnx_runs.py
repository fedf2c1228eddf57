"""Watching a ModelRuntime's runs on its engine: which thread ran how many rows, and when."""

from __future__ import annotations

import threading
import time


def record_runs(runtime) -> list[tuple[int, int, float, float]]:
    """(thread, rows, start, end) of each ``runtime.backend.run`` from now on (perf_counter seconds)."""
    runs: list[tuple[int, int, float, float]] = []
    backend_run = runtime.backend.run

    def run(names, inputs):
        t0 = time.perf_counter()
        out = backend_run(names, inputs)
        runs.append((threading.get_ident(), len(next(iter(inputs.values()))), t0, time.perf_counter()))
        return out

    runtime.backend.run = run
    return runs
