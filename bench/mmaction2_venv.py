"""MMAction2 1.2.0 in its own venv under ``.cache/`` (built once, reused): the reference of parity tests and benches.

The recipe is the one that works on this project's machines: torch 2.13.0 first, then the OpenMMLab packages, then
OpenCV's contrib build (TV-L1 flow), then a stub for ``mmaction/models/localizers/drn`` which the 1.2.0 wheel imports
but does not ship.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".cache" / "mmaction2-venv"
PACKAGES = ["mmengine==0.10.7", "mmcv-lite==2.1.0", "mmaction2==1.2.0", "importlib_metadata"]
# After PACKAGES, over mmcv-lite's opencv-python: cv2.optflow (TV-L1), which tools/misc/flow_extraction.py calls.
CONTRIB = "opencv-contrib-python==5.1.0.95"
RECIPE = f"mmaction2 1.2.0, {CONTRIB}\n"  # a venv built by another recipe is built again


def python() -> Path:
    """Path to the venv's interpreter, creating the venv first if needed (minutes, once)."""
    ready = VENV / ".ready"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "mmaction2-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists() or ready.read_text() != RECIPE:
            _build()
            ready.write_text(RECIPE)
    return VENV / "bin" / "python"


def _build() -> None:
    pip = [str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, *PACKAGES], check=True)
    subprocess.run([*pip, CONTRIB], check=True)
    site = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    drn = Path(site) / "mmaction" / "models" / "localizers" / "drn"
    drn.mkdir(parents=True, exist_ok=True)
    (drn / "__init__.py").write_text("")
    (drn / "drn.py").write_text("class DRN:  # stub: the 1.2.0 wheel imports this module but lacks it\n    pass\n")
