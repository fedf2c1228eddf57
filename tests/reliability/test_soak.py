"""Item 7: four cameras for ACTIONSTREAM_SOAK_S seconds (60 in the test suite; `make soak` runs 600).

After a warm-up (a sixth of the run, at most 60 s): resident memory grows by less than 10 %, nothing is dropped
at nominal load, and the capture→publish latency p99 of the last window is not above the first window's by more
than 20 % (or 10 ms: a tiny model's p99 is ~100 ms, where 20 % is scheduler noise on a shared 2-core machine)
unless p95 stayed within the same bound: a window holds ~160 clips (20 s, the 60 s run) to ~480 (60 s, `make soak`),
so its p99 is the 2nd to 5th largest sample, which one scheduler hiccup moves; a slowdown moves p95 as well.
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
        rss_end = agent.rss_kb()
        last = (time.time() - WINDOW_S, time.time())
        dropped = total(agent, "actionstream_frames_dropped_total")
        clips = total(agent, "actionstream_clips_inferred_total")
        code = agent.stop()
    events = agent.events()
    a, b = latencies_ms(events, *first), latencies_ms(events, *last)
    n_first, n_last = len(a), len(b)
    (p95_first, p99_first), (p95_last, p99_last) = (np.percentile(v or [np.nan], [95, 99]) for v in (a, b))
    growth = rss_end / rss_warm - 1
    stable = not (risen(p99_first, p99_last) and risen(p95_first, p95_last))
    record.row(
        7,
        "4 cameras (looping files at real-time pace, one clip every 0.5 s each), ACTIONSTREAM_SOAK_S seconds "
        "(CI 60, `make soak` 600)",
        "RSS growth < 10 % after warm-up; no frame or clip dropped; latency p99 of the last window at most 20 % "
        "(or 10 ms) above the first window's, unless p95 stayed within that (one hiccup); process alive",
        f"RSS growth below 10 %: {growth < 0.10}; dropped: {int(dropped)}; "
        f"latency stable (p99, or else p95, within 20 %): {stable}; alive to the end, exit {code}",
    )
    record.measure(
        f"7. soak ({DURATION_S:g} s, warm-up {WARM_UP_S:g} s, windows {WINDOW_S:g} s)",
        f"RSS {rss_warm / 1024:.0f} → {rss_end / 1024:.0f} MiB (peak {rss_peak / 1024:.0f}, {growth:+.1%}); "
        f"p95 / p99 {p95_first:.0f} / {p99_first:.0f} ms ({n_first} clips) → {p95_last:.0f} / {p99_last:.0f} ms "
        f"({n_last} clips); {int(clips)} clips inferred",
    )
    latency = (p95_first, p99_first, p95_last, p99_last)
    assert growth < 0.10 and dropped == 0 and stable and code == 0, (growth, dropped, latency)
    assert n_first >= WINDOW_S and n_last >= WINDOW_S  # at least one clip per second across the 4 cameras
