"""``make demo``: the end-to-end smoke on an embedded default, with nothing downloaded.

Generates a motion clip, exports a small SlowFast with RANDOM weights through ``export/to_onnx.py`` and runs
``actionstream infer`` on it, printing the top-5. (The trained demo model replaces the random one once the
trainer lands; until then the scores are meaningless but every stage of the real path runs.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from train.synthetic import MOTIONS, write_motion_clip

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".cache" / "demo"


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    clip = write_motion_clip(WORK / "move_right.mp4", "move_right")
    print(f"demo clip: {clip}")
    labels = WORK / "labels.txt"
    labels.write_text("\n".join(MOTIONS) + "\n")
    model = WORK / "slowfast_small.onnx"
    export = [sys.executable, str(ROOT / "export" / "to_onnx.py"), "--arch", "slowfast_r50_4x16", "--depth", "18"]
    export += ["--width", "16", "--size", "112", "--num-classes", str(len(MOTIONS)), "--labels", str(labels)]
    subprocess.run([*export, "--out", str(model)], check=True)
    cli = [sys.executable, "-m", "agent.cli"]
    subprocess.run([*cli, "inspect", str(model)], check=True)
    subprocess.run([*cli, "infer", "--model", str(model), "--every", "1.0", str(clip)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
