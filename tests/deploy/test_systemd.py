"""deploy/systemd/actionstream.service: systemd accepts it, and its commands are the agent's real CLI."""

from __future__ import annotations

import configparser
import shlex

from agent.cli import parser
from tests.deploy.tools import DEPLOY, VENV_BIN, run, tool

UNIT = DEPLOY / "systemd" / "actionstream.service"
INSTALLED = "/opt/actionstream/bin/actionstream"


def unit() -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # systemd keys are case-sensitive
    cp.read_string(UNIT.read_text())
    return cp


def verify(text: str, tmp_path) -> str:
    """``systemd-analyze verify`` with the executable pointed at this venv's (it checks that it exists)."""
    path = tmp_path / "actionstream.service"
    path.write_text(text.replace(INSTALLED, str(VENV_BIN / "actionstream")))
    result = run([tool("systemd-analyze"), "verify", str(path)])
    return (result.stdout + result.stderr).strip() + ("" if result.returncode == 0 else f"\nexit {result.returncode}")


def test_systemd_analyze_verify_is_silent(tmp_path):
    assert verify(UNIT.read_text(), tmp_path) == ""


def test_systemd_analyze_does_catch_mistakes(tmp_path):
    assert "Unknown key" in verify(UNIT.read_text().replace("ProtectSystem=", "ProtectSystm="), tmp_path)


def test_commands_are_the_agents_cli():
    service = unit()["Service"]
    for key in ("ExecStartPre", "ExecStart"):
        argv = shlex.split(service[key])
        assert argv[0] == INSTALLED
        args = parser().parse_args(argv[1:])  # argparse exits (SystemExit) on anything it does not know
        assert str(args.config) == "/etc/actionstream/config.yaml"
    assert shlex.split(service["ExecStartPre"])[1] == "check" and shlex.split(service["ExecStart"])[1] == "run"


def test_runs_unprivileged_and_restarts():
    service = unit()["Service"]
    assert service["User"] == "actionstream" and service["NoNewPrivileges"] == "yes"
    assert service["Restart"] == "on-failure" and service["KillSignal"] == "SIGTERM"
    assert service["EnvironmentFile"].startswith("-/etc/actionstream/")
    assert unit()["Install"]["WantedBy"] == "multi-user.target"
