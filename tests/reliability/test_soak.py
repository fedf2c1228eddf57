"""Item 7: four cameras for ACTIONSTREAM_SOAK_S seconds (60 in the test suite; `make soak` runs 600).

After a warm-up (a sixth of the run, at most 60 s): resident memory grows by less than 10 %, nothing is dropped
at nominal load, and the capture→publish latency does not drift. The rest of the run is cut into five windows;
a drift (a queue that grows, work that piles up) raises the latency p95 window after window, so it counts when
every window's p95 is above the one before and the last is more than 20 % (or 10 ms) above the first. Then one
more window is measured, and the rise must go on there too. A shared 2-core host moves one window's p95 by
30-40 % in a slow spell (102 → 153 → 129 → 143 → 112 ms in 10 s windows of one run); such a spell goes up and
comes back down, which a comparison of two windows cannot tell from a drift and a run of rising windows can.
"""

from __future__ import annotations

import os
import time
from itertools import pairwise

import numpy as np
import pytest

from tests.reliability.agentproc import EVENTS, AgentProcess, file_camera, total

DURATION_S = float(os.environ.get("ACTIONSTREAM_SOAK_S", "60"))
WARM_UP_S = min(60.0, DURATION_S / 6)
WINDOWS = 5
WINDOW_S = (DURATION_S - WARM_UP_S) / WINDOWS
CAMERAS = [f"cam{i}" for i in range(4)]


def latencies_ms(events: list[dict], start: float, end: float) -> list[float]:
    """Capture→publish of the clips whose newest frame arrived in [start, end) (UNIX s), one value per clip."""
    per_clip: dict[tuple, float] = {}
    for e in events:
        if start <= e["clip"]["end"] < end and e["type"] != "end":  # ends at shutdown wait for no clip
            key = (e["camera"], e["clip"]["end"])
            per_clip[key] = max(per_clip.get(key, 0.0), e["latency_ms"]["capture_to_publish"])
    return list(per_clip.values())


def p95(latencies: list[float]) -> float:
    return float(np.percentile(latencies, 95)) if latencies else float("nan")


def drifting(p95s: list[float]) -> bool:
    """Every window above the one before, and the last above the first by more than 20 % (or 10 ms)."""
    rising = all(later > earlier for earlier, later in pairwise(p95s))
    return rising and p95s[-1] - p95s[0] > max(0.2 * p95s[0], 10.0)


def windows(events: list[dict], start: float, count: int) -> list[list[float]]:
    return [latencies_ms(events, start + i * WINDOW_S, start + (i + 1) * WINDOW_S) for i in range(count)]


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
        time.sleep(WARM_UP_S)
        rss_warm = agent.rss_kb()
        measured = time.time()
        rss_peak = rss_warm
        count = WINDOWS
        while True:
            while time.time() < measured + count * WINDOW_S:
                time.sleep(1)
                rss_peak = max(rss_peak, agent.rss_kb())
                assert agent.alive(), agent.tail()
            p95s = [p95(w) for w in windows(agent.events(), measured, count)]
            if count > WINDOWS or not drifting(p95s):
                break
            count += 1  # one more window: a drift goes on rising
        rss_end = agent.rss_kb()
        dropped = total(agent, "actionstream_frames_dropped_total")
        clips = total(agent, "actionstream_clips_inferred_total")
        code = agent.stop()
    per_window = windows(agent.events(), measured, count)
    p95s = [p95(w) for w in per_window]
    drift = drifting(p95s)
    growth = rss_end / rss_warm - 1
    record.row(
        7,
        "4 cameras (looping files at real-time pace, one clip every 0.5 s each), ACTIONSTREAM_SOAK_S seconds "
        "(CI 60, `make soak` 600)",
        "RSS growth < 10 % after warm-up; no frame or clip dropped; no latency drift: the capture→publish p95 of "
        "five windows after warm-up does not rise window after window to more than 20 % (or 10 ms) above the "
        "first (a rise is confirmed by a sixth window); process alive",
        f"RSS growth below 10 %: {growth < 0.10}; dropped: {int(dropped)}; latency drift: {drift}; "
        f"alive to the end, exit {code}",
    )
    record.measure(
        f"7. soak ({DURATION_S:g} s, warm-up {WARM_UP_S:g} s, windows {WINDOW_S:g} s)",
        f"RSS {rss_warm / 1024:.0f} → {rss_end / 1024:.0f} MiB (peak {rss_peak / 1024:.0f}, {growth:+.1%}); "
        f"p95 per window {' → '.join(f'{v:.0f}' for v in p95s)} ms "
        f"({min(map(len, per_window))}-{max(map(len, per_window))} clips each); {int(clips)} clips inferred",
    )
    assert growth < 0.10 and dropped == 0 and not drift and code == 0, (growth, dropped, p95s)
    assert all(len(w) >= WINDOW_S for w in per_window)  # at least one clip per second across the 4 cameras


def test_drift_is_a_rise_in_every_window():
    assert drifting([100, 110, 118, 125, 131])
    assert not drifting([102, 153, 129, 143, 112])  # a slow spell of the host
    assert not drifting([100, 101, 102, 103, 104])  # within 20 % (and not 10 ms)
    assert not drifting([100, 140, 150, 149, 160])  # one window down: not a steady rise
    assert drifting([20, 23, 26, 29, 32])  # 10 ms above a small p95 counts
