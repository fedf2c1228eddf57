"""bench.common's thread accounting: each thread's CPU lands in the group its name maps to, and only there."""

from __future__ import annotations

import threading
import time

from bench.common import ThreadCpu, thread_cpu_seconds


def _spin(stop: threading.Event) -> None:
    while not stop.is_set():
        pass


def test_thread_cpu_puts_a_busy_thread_in_its_group_and_an_idle_one_near_zero():
    stop = threading.Event()
    busy = threading.Thread(target=_spin, args=(stop,), name="busy-1")
    idle = threading.Thread(target=stop.wait, name="idle-1")
    groups = ThreadCpu(lambda name: name.split("-")[0] if "-" in name else "rest")
    busy.start(), idle.start()
    try:
        time.sleep(1.0)
        cpu = groups.percent()
        assert busy.native_id in thread_cpu_seconds() and idle.native_id in thread_cpu_seconds()
    finally:
        stop.set()
        busy.join(), idle.join()
    # A spinning thread takes most of a core even on a shared machine; a waiting one takes none of it.
    assert cpu["busy"] > 50, cpu
    assert cpu.get("idle", 0.0) < 5, cpu
    assert cpu.get("rest", 0.0) < 10, cpu  # this (sleeping) thread and any other
