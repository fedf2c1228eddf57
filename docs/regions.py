"""Draws docs/regions.png: a frame of the scripted stream (agent/demo/synthetic.py) with a camera's region, mask and
zones drawn as ``actionstream infer --annotate`` draws them, from the config below (checked as the agent checks it).

    python docs/regions.py [OUT.png]     # default: docs/regions.png; prints the config
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's agent, wherever the script is run from

CONFIG = """\
cameras:
  - name: yard
    url: rtsp://viewer:${YARD_PASSWORD}@192.0.2.20/stream1
    model: people                     # a person model (zones are where people stand)
    region: [0.25, 0.2, 1.0, 1.0]     # the model sees this part of the frame only
    mask:                             # never seen by the model or its detector
      - [[0.0, 0.0], [0.5, 0.0], [0.5, 0.12], [0.0, 0.12]]
      - [[0.8, 0.2], [1.0, 0.2], [1.0, 0.55], [0.8, 0.55]]
    zones:
      gate: [[0.3, 0.55], [0.6, 0.5], [0.65, 1.0], [0.3, 1.0]]
      lawn: [[0.6, 0.5], [0.95, 0.6], [0.95, 1.0], [0.65, 1.0]]
    events:
      zones: [gate]                   # events only for people at the gate
"""
SEED, SECONDS, AT_S, FPS, WIDTH, HEIGHT = 3, 4, 2.5, 15, 480, 360


def camera():
    """The camera of :data:`CONFIG`, validated as ``actionstream check`` does."""
    import yaml

    from agent.config import parse_config

    data = yaml.safe_load(CONFIG.replace("${YARD_PASSWORD}", "x"))
    return parse_config(data | {"models": {"people": {"path": "people.onnx"}}}, "docs/regions.py").cameras[0]


def draw(out: Path) -> Path:
    import av
    import numpy as np
    from PIL import Image

    from agent.demo.synthetic import write_scripted_stream
    from agent.offline.annotate import Overlays

    cam = camera()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "scripted.mp4"
        write_scripted_stream(
            video, Path(tmp) / "scripted.json", minutes=SECONDS / 60, fps=FPS, width=WIDTH, height=HEIGHT, seed=SEED
        )
        with av.open(str(video)) as container:
            frame = next(f for f in container.decode(video=0) if f.time >= AT_S)
            image = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
    Overlays(region=cam.region, mask=cam.mask, zones=cam.zones).draw(image)
    Image.fromarray(image).save(out, optimize=True)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "regions.png"
    print(f"wrote {draw(target)} from:\n\n{CONFIG}")
