"""`make demo`'s promise: the bundled model on the scripted stream, played live, scores F1 >= 0.8."""

from __future__ import annotations

import re
import subprocess
import sys

from agent.demo.run import DEMO_MODEL, ROOT


def test_demo_prints_a_passing_scorecard():
    assert DEMO_MODEL.is_file() and DEMO_MODEL.stat().st_size <= 10 * 2**20, "models/motion_demo.onnx (<= 10 MB)"
    out = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--mqtt", ""],  # "": terminal only, whatever runs on :1883
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    f1 = float(re.search(r"F1 ([0-9.]+)", out.stdout).group(1))
    assert f1 >= 0.8, out.stdout[-2000:]
    assert re.search(r"latency p50 \d+ ms, p99 \d+ ms", out.stdout)
