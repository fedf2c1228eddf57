"""`python -m agent run` as a real child process: its output, its /metrics, its threads, fds and memory."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.rtsp_server import free_port


class AgentProcess:
    """Writes ``config`` (a dict) to ``directory/config.yaml`` and runs the agent on it.

    Metrics are served on 127.0.0.1 on a free port unless the config says otherwise. stdout lines (event JSON from
    the stdout sink) and stderr lines (the log) are collected by two reader threads; with ``read_stdout=False``
    nobody reads stdout (a pipe of ``stdout_pipe_bytes``, when given) until :meth:`read_stdout`. ``args``: more
    arguments for ``run`` (e.g. ``--shard 0/2``).
    """

    def __init__(
        self,
        directory: Path,
        config: dict,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        read_stdout: bool = True,
        stdout_pipe_bytes: int | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.config = dict(config)
        self.config.setdefault("metrics", {"host": "127.0.0.1", "port": free_port()})
        self.metrics_url = f"http://127.0.0.1:{self.config['metrics'].get('port')}/metrics"
        self.config_file = directory / "config.yaml"
        self.config_file.write_text(yaml.safe_dump(self.config))
        self.env = {**os.environ, **(env or {})}
        self.args = list(args or [])
        self._read_stdout, self._pipe_bytes = read_stdout, stdout_pipe_bytes
        self.proc: subprocess.Popen | None = None
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers: list[threading.Thread] = []

    # -- life cycle -------------------------------------------------------------------------------------------------

    def start(self) -> AgentProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(self.config_file), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=self.env,
        )
        if self._pipe_bytes is not None:
            assert self.proc.stdout is not None
            fcntl.fcntl(self.proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, self._pipe_bytes)
        self._reader(self.proc.stderr, self.stderr)
        if self._read_stdout:
            self.read_stdout()
        return self

    def read_stdout(self) -> None:
        """Start reading stdout (``read_stdout=False``: the reader comes back)."""
        assert self.proc is not None
        self._reader(self.proc.stdout, self.stdout)

    def _reader(self, stream, lines: list[str]) -> None:
        reader = threading.Thread(target=_read_lines, args=(stream, lines), daemon=True)
        reader.start()
        self._readers.append(reader)

    def kill(self) -> None:
        """SIGKILL (a crash, an OOM kill) and wait."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit status (the process is killed if it does not exit in time)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for reader in self._readers:
            reader.join(5)
        return self.proc.returncode

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    # -- what it says -----------------------------------------------------------------------------------------------

    def log(self) -> str:
        return "\n".join(self.stderr)

    def events(self) -> list[dict]:
        return [json.loads(line) for line in list(self.stdout) if line.startswith("{")]

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample of /metrics as ``{(name, sorted label items): value}``; empty while it does not answer."""
        try:
            text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        except OSError:
            return {}
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_for(self, predicate: Callable[[], object], timeout: float, what: str = "condition") -> float:
        """Poll ``predicate`` until true; seconds it took. Fails early when the agent exits."""
        start = time.monotonic()
        while not predicate():
            if not self.alive():
                raise AssertionError(f"the agent exited ({self.proc.returncode}) waiting for {what}:\n{self.tail()}")
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{what} not reached after {timeout} s; agent log:\n{self.tail()}")
            time.sleep(0.1)
        return time.monotonic() - start

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.stderr[-lines:])

    # -- what it holds ----------------------------------------------------------------------------------------------

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


def _read_lines(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


def run_cli(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m agent ARGS`` to completion (exit status, stdout, stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# Random weights score every label near 0.2: each clip gives an update for every label (update_s tiny).
EVENTS = {"threshold": 0.1, "end_threshold": 0.05, "min_hits": 1, "update_s": 0.01}


def file_camera(name: str, path: Path, every_s: float = 0.5) -> dict:
    """A looping file played at its own rate: a live camera without an encoder's CPU cost. Each camera reads the
    file through a link of its own name, so that cameras of one file are separate streams (entries naming one URL
    share a decoder)."""
    link = path.with_name(f"{name}-{path.name}")
    if not link.exists():
        link.symlink_to(path)
    return {"name": name, "url": str(link), "loop": True, "realtime": True, "every_s": every_s}


def total(agent: AgentProcess, name: str) -> float:
    """Sum of a metric over all its label sets."""
    return sum(v for (n, _), v in agent.metrics().items() if n == name)
