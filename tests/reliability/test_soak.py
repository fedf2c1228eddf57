"""Item 7: four cameras for ACTIONSTREAM_SOAK_S seconds (60 in the test suite; `make soak` runs 600).

After a warm-up (a sixth of the run, at most 60 s): resident memory grows by less than 10 %, nothing is dropped
at nominal load, and the capture→publish latency p99 of the last window is not above the first window's by more
than 20 % (or 10 ms: a tiny model's p99 is ~100 ms, where 20 % is scheduler noise on a shared 2-core machine)
unless p95 stayed within the same bound: a window holds ~160 clips (20 s, the 60 s run) to ~480 (60 s, `make soak`),
so its p99 is the 2nd to 5th largest sample, which one scheduler hiccup moves; a slowdown moves p95 as well.
A rise must also persist: when the last window is above the bound, one more window is measured, and only a rise
in both counts. The shared host has slow spells of ~20 s (p95 92 → 115 ms in one window, 116 → 94 ms in the next
run's), which a one-off window cannot tell from a drift; a leak or a queue that grows is still there a window later.
A lower latency at the end is not a failure.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tests.reliability.agentproc import EVENTS, AgentProcess, file_camera, total

DURATION_S = float(os.environ.get("ACTIONSTREAM_SOAK_S", "60"))
WARM_UP_S = min(60.0, DURATION_S / 6)
WINDOW_S = min(60.0, (DURATION_S - WARM_UP_S) / 2.5)
CAMERAS = [f"cam{i}" for i in range(4)]


def latencies_ms(events: list[dict], start: float, end: float) -> list[float]:
    """Capture→publish of the clips whose newest frame arrived in [start, end) (UNIX s), one value per clip."""
    per_clip: dict[tuple, float] = {}
    for e in events:
        if start <= e["clip"]["end"] < end and e["type"] != "end":  # ends at shutdown wait for no clip
            key = (e["camera"], e["clip"]["end"])
            per_clip[key] = max(per_clip.get(key, 0.0), e["latency_ms"]["capture_to_publish"])
    return list(per_clip.values())


def risen(first: float, last: float) -> bool:
    return last - first > max(0.2 * first, 10.0)


def p95_p99(latencies: list[float]) -> tuple[float, float]:
    p95, p99 = np.percentile(latencies or [np.nan], [95, 99])
    return float(p95), float(p99)


def rose(first: list[float], last: list[float]) -> bool:
    """The last window's p99 and p95 both above the first window's by more than the bound."""
    (p95_first, p99_first), (p95_last, p99_last) = p95_p99(first), p95_p99(last)
    return risen(p99_first, p99_last) and risen(p95_first, p95_last)


@pytest.mark.soak
@pytest.mark.timeout(DURATION_S + 180)
def test_soak_four_cameras(stream_file, tiny_model, tmp_path, record):
    config = {
        "cameras": [file_camera(name, stream_file) for name in CAMERAS],
        # One inference thread: on 2 cores, ORT's default pool contends with the 4 decoding threads.
        "models": {"tiny": {"path": str(tiny_model), "max_batch": 4, "threads": 1}},
        "events": EVENTS,
    }
    with AgentProcess(tmp_path / "agent", config) as agent:
        agent.wait_for(lambda: all(agent.value("actionstream_stream_up", camera=c) == 1 for c in CAMERAS), 60, "up")
        started = time.time()
        time.sleep(WARM_UP_S)
        rss_warm = agent.rss_kb()
        first = (time.time(), time.time() + WINDOW_S)
        rss_peak = rss_warm
        while time.time() < started + DURATION_S:
            time.sleep(1)
            rss_peak = max(rss_peak, agent.rss_kb())
            assert agent.alive(), agent.tail()
        last = (time.time() - WINDOW_S, time.time())
        spell = rose(latencies_ms(agent.events(), *first), latencies_ms(agent.events(), *last))
        if spell:  # one more window: a slow spell of the host passes, a drift does not
            time.sleep(WINDOW_S)
            last = (last[1], time.time())
        rss_end = agent.rss_kb()
        dropped = total(agent, "actionstream_frames_dropped_total")
        clips = total(agent, "actionstream_clips_inferred_total")
        code = agent.stop()
    events = agent.events()
    a, b = latencies_ms(events, *first), latencies_ms(events, *last)
    n_first, n_last = len(a), len(b)
    (p95_first, p99_first), (p95_last, p99_last) = p95_p99(a), p95_p99(b)
    growth = rss_end / rss_warm - 1
    stable = not (spell and rose(a, b))  # a rise in the window after the first check too
    record.row(
        7,
        "4 cameras (looping files at real-time pace, one clip every 0.5 s each), ACTIONSTREAM_SOAK_S seconds "
        "(CI 60, `make soak` 600)",
        "RSS growth < 10 % after warm-up; no frame or clip dropped; latency p99 of the last window at most 20 % "
        "(or 10 ms) above the first window's, unless p95 stayed within that (one hiccup) or the rise is gone one "
        "window later (a slow spell of the host); process alive",
        f"RSS growth below 10 %: {growth < 0.10}; dropped: {int(dropped)}; "
        f"latency stable (p99, or else p95, within 20 %, or back within it a window later): {stable}; "
        f"alive to the end, exit {code}",
    )
    record.measure(
        f"7. soak ({DURATION_S:g} s, warm-up {WARM_UP_S:g} s, windows {WINDOW_S:g} s)",
        f"RSS {rss_warm / 1024:.0f} → {rss_end / 1024:.0f} MiB (peak {rss_peak / 1024:.0f}, {growth:+.1%}); "
        f"p95 / p99 {p95_first:.0f} / {p99_first:.0f} ms ({n_first} clips) → {p95_last:.0f} / {p99_last:.0f} ms "
        f"({n_last} clips{', one window later: the window before had risen' if spell else ''}); "
        f"{int(clips)} clips inferred",
    )
    latency = (p95_first, p99_first, p95_last, p99_last)
    assert growth < 0.10 and dropped == 0 and stable and code == 0, (growth, dropped, latency)
    assert n_first >= WINDOW_S and n_last >= WINDOW_S  # at least one clip per second across the 4 cameras
