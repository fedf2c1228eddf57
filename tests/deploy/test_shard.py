"""Camera sharding (agent/shard.py) and the agent's ``--shard`` option / environment (agent/cli.py)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from agent import cli
from agent.shard import (
    ENV_SHARD,
    ENV_SHARD_INDEX,
    ENV_SHARDS,
    ShardError,
    assignment,
    ordinal_from_hostname,
    parse_shard,
    resolve_shard,
    select,
    shard_of,
)
from tests.deploy.tools import ROOT
from tests.rtsp_server import free_port

NAMES = [f"cam-{i:03d}" for i in range(100)]
MORE = [f"site{i}_door" for i in range(50)] + [f"Yard-{i}" for i in range(50)]


# --- the hash ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", range(1, 9))
def test_every_camera_in_exactly_one_shard(count):
    shards = [select([SimpleNamespace(name=n) for n in NAMES], i, count) for i in range(count)]
    taken = Counter(c.name for shard in shards for c in shard)
    assert set(taken) == set(NAMES) and set(taken.values()) == {1}
    assert all(0 <= shard_of(n, count) < count for n in NAMES)
    assert sorted(sum(assignment(NAMES, count).values(), [])) == sorted(NAMES)
    if count > 1:  # 100 names spread over every shard (SHA-256 is uniform enough that none stays empty)
        assert all(shards), [len(s) for s in shards]


@pytest.mark.parametrize("count", range(1, 9))
def test_assignment_stable_when_unrelated_cameras_are_added(count):
    before = {n: shard_of(n, count) for n in NAMES}
    grown = assignment(NAMES[:50] + MORE + NAMES[50:], count)
    after = {n: i for i, names in grown.items() for n in names}
    assert {n: after[n] for n in NAMES} == before


def test_hash_is_sha256_of_the_name_not_pythons_hash():
    """The same in every process whatever PYTHONHASHSEED: replicas agree with each other and with this table."""
    for name in ["dock1", "lobby", "yard", "Kamera-ü"]:
        expected = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % 7
        assert shard_of(name, 7) == expected
    code = "from agent.shard import shard_of; print([shard_of(f'cam-{i:03d}', 5) for i in range(100)])"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": seed}
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert seen == {str([shard_of(n, 5) for n in NAMES]) + "\n"}


def test_one_shard_takes_everything():
    assert {shard_of(n, 1) for n in NAMES + MORE} == {0}


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "3"])
def test_shard_count_must_be_a_positive_int(bad):
    with pytest.raises(ShardError, match="positive integer"):
        shard_of("dock1", bad)


# --- parsing ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected", [("0/1", (0, 1)), ("2/3", (2, 3)), (" 7 / 8 ", (7, 8)), ("0/4096", (0, 4096))]
)
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize(
    "text,message",
    [
        ("3/3", r"--shard: shard index 3 is out of range for 3 shard\(s\): expected 0..2"),
        ("0/0", "--shard: the shard count must be at least 1, got 0"),
        ("1", "--shard: expected INDEX/COUNT such as 0/3"),
        ("-1/3", "--shard: expected INDEX/COUNT"),
        ("a/b", "--shard: expected INDEX/COUNT"),
        ("1/2/3", "--shard: expected INDEX/COUNT"),
        ("", "--shard: expected INDEX/COUNT"),
        ("0/5000", "at most 4096"),
    ],
)
def test_parse_shard_errors_say_what_was_expected(text, message):
    with pytest.raises(ShardError, match=message):
        parse_shard(text)


@pytest.mark.parametrize(
    "host,ordinal",
    [("actionstream-0", 0), ("actionstream-12", 12), ("my-agent-3.actionstream.ns.svc.cluster.local", 3)],
)
def test_ordinal_from_hostname(host, ordinal):
    assert ordinal_from_hostname(host) == ordinal


@pytest.mark.parametrize("host", ["actionstream", "edge-box", "actionstream-", "localhost"])
def test_hostname_without_ordinal_is_a_clear_error(host):
    with pytest.raises(ShardError, match="does not end in a StatefulSet ordinal"):
        ordinal_from_hostname(host)


# --- where the shard comes from ---------------------------------------------------------------------------------


def test_resolve_order_flag_then_env_then_shards_with_ordinal():
    env = {ENV_SHARD: "1/4", ENV_SHARDS: "3", "HOSTNAME": "actionstream-2"}
    assert resolve_shard("0/2", env) == (0, 2)
    assert resolve_shard(None, env) == (1, 4)
    assert resolve_shard(None, {ENV_SHARDS: "3", "HOSTNAME": "actionstream-2"}) == (2, 3)
    assert resolve_shard(None, {ENV_SHARDS: "3"}, hostname="actionstream-1") == (1, 3)
    # Kubernetes >= 1.28 fills the index from the pod-index label; on older clusters it is "" (unset label).
    assert resolve_shard(None, {ENV_SHARDS: "3", ENV_SHARD_INDEX: "0", "HOSTNAME": "actionstream-2"}) == (0, 3)
    assert resolve_shard(None, {ENV_SHARDS: "3", ENV_SHARD_INDEX: "", "HOSTNAME": "actionstream-2"}) == (2, 3)
    assert resolve_shard(None, {}) is None
    assert resolve_shard(None, {ENV_SHARD: "", ENV_SHARDS: " "}) is None


@pytest.mark.parametrize(
    "env,message",
    [
        ({ENV_SHARD: "x"}, "ACTIONSTREAM_SHARD: expected INDEX/COUNT"),
        ({ENV_SHARDS: "two", "HOSTNAME": "a-0"}, "ACTIONSTREAM_SHARDS: expected a non-negative integer"),
        ({ENV_SHARDS: "3", "HOSTNAME": "actionstream-3"}, "shard index 3 is out of range for 3"),
        ({ENV_SHARDS: "3", "HOSTNAME": "edgebox"}, "does not end in a StatefulSet ordinal"),
        ({ENV_SHARD_INDEX: "1"}, "ACTIONSTREAM_SHARD_INDEX is set but ACTIONSTREAM_SHARDS"),
        ({ENV_SHARDS: "2", ENV_SHARD_INDEX: "5"}, "ACTIONSTREAM_SHARD_INDEX: shard index 5 is out of range"),
    ],
)
def test_resolve_errors_name_their_source(env, message):
    with pytest.raises(ShardError, match=message):
        resolve_shard(None, env)


# --- the agent honours it ---------------------------------------------------------------------------------------


def _config(tmp_path: Path, names: list[str], model: Path, video: Path | None = None, port: int = 0) -> Path:
    """Each camera a stream of its own (entries that name one stream would be sharded together): a link to the
    video, or a file that is never opened."""
    urls = []
    for n in names:
        url = tmp_path / f"{n}.mp4"
        if video is not None and not url.is_symlink():
            url.symlink_to(video)
        urls.append(str(url))
    cameras = [{"name": n, "url": url, "loop": True, "every_s": 0.5} for n, url in zip(names, urls, strict=True)]
    data = {
        "models": {"m": {"path": str(model), "max_batch": 4}},
        "cameras": cameras,
        "metrics": {"host": "127.0.0.1", "port": port},
        "log_level": "INFO",
    }
    path = tmp_path / f"config-{port}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class _FakeAgent:
    """Stands in for agent.live.app.Agent: records the config ``run`` hands it (and the shard, in :attr:`shards`)."""

    seen: list = []
    shards: list = []

    def __init__(self, config, shard=None) -> None:
        self.config = config
        _FakeAgent.seen.append(config)
        _FakeAgent.shards.append(shard)

    def load(self) -> None:
        pass

    async def run(self, stop) -> None:
        pass


@pytest.fixture
def fake_agent(monkeypatch):
    import agent.live.app

    _FakeAgent.seen, _FakeAgent.shards = [], []
    monkeypatch.setattr(agent.live.app, "Agent", _FakeAgent)
    for key in (ENV_SHARD, ENV_SHARDS, ENV_SHARD_INDEX):
        monkeypatch.delenv(key, raising=False)
    return _FakeAgent.seen


def test_run_shard_flag_filters_cameras(tmp_path, fake_agent, caplog):
    config = _config(tmp_path, NAMES[:20], tmp_path / "m.onnx")
    caplog.set_level("INFO", logger="actionstream")
    for index in range(3):
        assert cli.main(["run", "-c", str(config), "--shard", f"{index}/3"]) == 0
    kept = [[c.name for c in seen.cameras] for seen in fake_agent]
    assert kept == [[n for n in NAMES[:20] if shard_of(n, 3) == i] for i in range(3)]
    assert sorted(sum(kept, [])) == sorted(NAMES[:20])
    assert f"shard 1/3: {len(kept[1])} of 20 camera(s): {', '.join(kept[1])}" in caplog.text
    assert _FakeAgent.shards == [(0, 3), (1, 3), (2, 3)]  # for the MQTT identity of each replica


def test_run_without_shard_takes_every_camera(tmp_path, fake_agent):
    config = _config(tmp_path, NAMES[:5], tmp_path / "m.onnx")
    assert cli.main(["run", "-c", str(config)]) == 0
    assert [c.name for c in fake_agent[0].cameras] == NAMES[:5]
    assert _FakeAgent.shards == [None]


def test_run_shard_from_statefulset_environment(tmp_path, fake_agent, monkeypatch):
    config = _config(tmp_path, NAMES[:20], tmp_path / "m.onnx")
    monkeypatch.setenv(ENV_SHARDS, "4")
    monkeypatch.setenv("HOSTNAME", "actionstream-3")
    assert cli.main(["run", "-c", str(config)]) == 0
    assert [c.name for c in fake_agent[0].cameras] == [n for n in NAMES[:20] if shard_of(n, 4) == 3]
    monkeypatch.setenv(ENV_SHARD, "0/2")  # explicit settings win over the ordinal ...
    assert cli.main(["run", "-c", str(config)]) == 0
    assert [c.name for c in fake_agent[1].cameras] == [n for n in NAMES[:20] if shard_of(n, 2) == 0]
    assert cli.main(["run", "-c", str(config), "--shard", "1/2"]) == 0  # ... and the flag over both
    assert [c.name for c in fake_agent[2].cameras] == [n for n in NAMES[:20] if shard_of(n, 2) == 1]


@pytest.mark.parametrize(
    "argv,env,message",
    [
        (["--shard", "3/3"], {}, "error: --shard: shard index 3 is out of range for 3 shard(s): expected 0..2"),
        (["--shard", "half"], {}, "error: --shard: expected INDEX/COUNT such as 0/3"),
        ([], {ENV_SHARDS: "2", "HOSTNAME": "edge-box"}, "does not end in a StatefulSet ordinal"),
    ],
)
def test_run_bad_shard_is_one_error_line_and_exit_2(tmp_path, fake_agent, monkeypatch, capsys, argv, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = _config(tmp_path, NAMES[:3], tmp_path / "m.onnx")
    assert cli.main(["run", "-c", str(config), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert fake_agent == []


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def _wait_metrics(port: int, proc: subprocess.Popen, log: Path, predicate, timeout: float = 25.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"agent exited with {proc.returncode}: {log.read_text()[-3000:]}"
        try:
            text = _metrics(port)
            if predicate(text):
                return text
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"metrics on port {port} never satisfied the check; last:\n{text[-3000:]}")


def test_agent_process_runs_only_its_shard(tmp_path, tiny_model):
    """Two real agents: one told `--shard 1/3`, one a StatefulSet pod whose shard has no camera (it idles)."""
    from agent.demo.synthetic import write_scripted_stream

    video = tmp_path / "stream.mp4"
    write_scripted_stream(video, tmp_path / "stream.json", minutes=0.1, seed=3)
    names = ["door", "yard", "dock1", "dock2", "lobby", "gate"]
    by_shard = assignment(names, 3)
    assert by_shard[1] and len(by_shard[1]) < len(names)
    empty = next(i for i in range(4) if not assignment(names[:2], 4)[i])  # some shard of 4 that gets neither camera

    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONSTREAM_")} | {"PYTHONPATH": str(ROOT)}
    p1, p2 = free_port(), free_port()
    runs = [
        (p1, names, ["--shard", "1/3"], env),
        (p2, names[:2], [], env | {ENV_SHARDS: "4", "HOSTNAME": f"actionstream-{empty}"}),
    ]
    procs, logs = [], []
    try:
        for port, cams, extra, run_env in runs:
            config = _config(tmp_path, cams, tiny_model, video, port)
            logs.append(tmp_path / f"agent-{port}.log")
            with logs[-1].open("w") as log:  # events (stdout) and logs (stderr): files, so no pipe fills up
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "agent", "run", "-c", str(config), *extra],
                        cwd=ROOT,
                        env=run_env,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )
        mine = set(by_shard[1])

        def decoded(text: str) -> set[str]:
            return {
                line.split('camera="')[1].split('"')[0]
                for line in text.splitlines()
                if line.startswith("actionstream_frames_decoded_total{") and not line.endswith(" 0.0")
            }

        text = _wait_metrics(p1, procs[0], logs[0], lambda t: decoded(t) == mine)
        assert "actionstream_stream_up{" in text
        # The empty shard serves metrics, stays up (no camera to wait for) and decodes nothing.
        _wait_metrics(p2, procs[1], logs[1], lambda t: "actionstream_mqtt_connected" in t)
        time.sleep(1.0)
        assert procs[1].poll() is None, logs[1].read_text()
        assert decoded(_metrics(p2)) == set()
        assert decoded(_metrics(p1)) == mine
    finally:
        codes = []
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            try:
                codes.append(proc.wait(timeout=20))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
    log1, log2 = (log.read_text() for log in logs)
    assert codes == [0, 0], (log1[-3000:], log2[-3000:])
    assert f"shard 1/3: {len(by_shard[1])} of 6 camera(s): {', '.join(by_shard[1])}" in log1
    assert f"shard {empty}/4: 0 of 2 camera(s): none" in log2
    assert "no camera hashes to this shard" in log2


def test_check_prints_the_shard_plan(tmp_path, tiny_model, capsys):
    config = _config(tmp_path, NAMES[:10], tiny_model)
    assert cli.main(["check", "-c", str(config), "--shards", "3"]) == 0
    out = capsys.readouterr().out
    for index, names in assignment(NAMES[:10], 3).items():
        assert f"  shard {index}/3: {', '.join(names) or '(no cameras)'}" in out
    assert cli.main(["check", "-c", str(config), "--shards", "0"]) == 2
