"""The one-way import rules of pyproject.toml (``lint-imports``, run by ``make lint``) hold, and they would catch
the agent importing the trainer: the same check on a copy of the tree with one such import fails, naming it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("agent", "export", "train", "bench", "tests")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of the project's Python packages and pyproject.toml."""
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: `make install` installs import-linter (the dev extra)")
    root = tmp_path_factory.mktemp("tree")
    shutil.copy(ROOT / "pyproject.toml", root)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "data", "results"))
    return root


def test_the_import_contracts_hold(tree):
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and result.stdout.count("KEPT") >= 6


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("agent/live/_bad.py", "import train.trainer", "agent is torch-free"),
        ("agent/offline/_bad.py", "def f():\n    from export import to_onnx\n", "agent is torch-free"),
        ("agent/_bad.py", "import torch", "agent is torch-free"),
        ("bench/_bad.py", "from tests import videos", "bench does not import tests"),
        ("agent/live/_bad.py", "from agent.cli import main", "commands over tools"),
        ("agent/live/clips.py", "from agent.live.app import Agent", "follows the data flow"),
    ],
)
def test_a_forbidden_import_breaks_the_lint(tree, module, line, contract):
    """``line`` added to ``module`` (a new one, or one that exists: appended)."""
    path = tree / module
    before = path.read_text() if path.exists() else None
    path.write_text((before or "") + "\n" + line + "\n")
    try:
        result = lint_imports(tree)
    finally:
        if before is None:
            path.unlink()
        else:
            path.write_text(before)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken and module.removesuffix(".py").replace("/", ".") in broken, result.stdout
