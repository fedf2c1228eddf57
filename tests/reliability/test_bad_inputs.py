"""Item 4: bad videos, model files and configs, each through the real command line.

Fatal problems (config, model) must stop `actionstream run` before anything starts, with exit 2 and one `error:`
line that names the file or key. A bad video is fatal for `infer`; as a camera it is that camera's problem only.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import yaml
from onnx import TensorProto

from tests.agent.test_spec import clip_spec, tiny_onnx
from tests.reliability.agentproc import EVENTS, AgentProcess, file_camera, run_cli

pytestmark = pytest.mark.timeout(120)


def bad_videos(good: Path, directory: Path) -> dict[str, Path]:
    """Deterministic damage to a valid H.264 MP4 (its index is at the end, so a cut loses it)."""
    data = good.read_bytes()
    rng = random.Random(7)
    corrupted = bytearray(data)
    for i in range(len(data) // 4, 3 * len(data) // 4, 97):
        corrupted[i] = rng.randrange(256)
    videos = {
        "corrupted (bytes overwritten in the middle)": corrupted,
        "truncated (cut at 40 %, index lost)": data[: len(data) * 4 // 10],
        "zero-length": b"",
        "random bytes": random.Random(3).randbytes(200_000),
    }
    out = {}
    for i, (case, content) in enumerate(videos.items()):
        out[case] = directory / f"bad{i}.mp4"
        out[case].write_bytes(content)
    out["wrong extension (an MP4 named .txt)"] = directory / "video.txt"
    out["wrong extension (an MP4 named .txt)"].write_bytes(data)
    return out


# case → (exit code of `infer`, what its error line must name)
INFER_EXPECTED = {
    "corrupted (bytes overwritten in the middle)": 0,  # damaged packets are skipped
    "truncated (cut at 40 %, index lost)": 2,
    "zero-length": 2,
    "random bytes": 2,
    "wrong extension (an MP4 named .txt)": 0,  # the container is probed, not guessed from the name
}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def verdict(done, needle: str) -> str:
    errors = error_lines(done.stderr)
    return (
        f"exit {done.returncode}; error lines: {len(errors)}; names {needle}: {any(needle in e for e in errors)}; "
        f"traceback: {'Traceback' in done.stderr}"
    )


def test_bad_videos_with_infer(stream_file, tiny_model, tmp_path, record):
    for case, path in bad_videos(stream_file, tmp_path).items():
        done = run_cli("infer", str(path), "--model", str(tiny_model))
        expected_code = INFER_EXPECTED[case]
        if expected_code == 0:
            ok = done.returncode == 0 and "Traceback" not in done.stderr and "whole video" in done.stdout
            observed = f"exit {done.returncode}; timeline printed: {'whole video' in done.stdout}"
            expected = "exit 0, the readable frames recognised"
        else:
            errors = error_lines(done.stderr)
            ok = done.returncode == 2 and len(errors) == 1 and str(path) in errors[0] and "Traceback" not in done.stderr
            observed = verdict(done, str(path)).replace(str(path), "the file")
            expected = "exit 2, one error line naming the file, no traceback"
        record.row(4, f"video, `infer`: {case}", expected, observed)
        assert ok, (case, done.returncode, done.stderr[-2000:])


def test_bad_videos_as_cameras_beside_a_good_one(stream_file, tiny_model, tmp_path, record):
    videos = bad_videos(stream_file, tmp_path)
    names = {case: f"bad{i}" for i, case in enumerate(videos)}
    config = {
        "cameras": [file_camera("good", stream_file)]
        + [
            {**file_camera(names[case], path), "backoff_initial_s": 0.2, "backoff_max_s": 1}
            for case, path in videos.items()
        ],
        "models": {"tiny": {"path": str(tiny_model), "max_batch": 4}},
        "events": EVENTS,
    }
    with AgentProcess(tmp_path / "agent", config) as agent:
        clips = lambda name: len({e["clip"]["end"] for e in agent.events() if e["camera"] == name})  # noqa: E731
        agent.wait_for(lambda: clips("good") >= 6, 60, "clips from the good camera")
        start, t0 = clips("good"), time.monotonic()
        time.sleep(5)
        rate = (clips("good") - start) / (time.monotonic() - t0)
        alive = agent.alive()
        code = agent.stop()
    log = agent.log()
    for case, name in names.items():
        if INFER_EXPECTED[case] == 0:
            outcome = f"clips from it: {clips(name) > 0}"
            expected = "played like a good camera"
        else:
            lines = [line for line in agent.stderr if f"camera {name} " in line and "reconnect attempt" in line]
            outcome = f"warning naming the camera: {bool(lines)}; clips from it: {clips(name) > 0}"
            expected = "a warning naming the camera, retried with backoff; other cameras unaffected"
        record.row(4, f"video as a camera: {case}", expected, f"{outcome}; agent alive: {alive}, exit {code}")
        assert alive and code == 0
        assert (clips(name) > 0) == (INFER_EXPECTED[case] == 0), (case, log[-3000:])
        if INFER_EXPECTED[case] != 0:
            assert lines, (case, log[-3000:])
    record.row(
        4,
        "good camera beside 5 bad video cameras",
        "keeps serving: clips at least at half the nominal rate (2 per s; a looping file restarts its buffer)",
        f"clip rate at least half nominal: {rate >= 1}",
    )
    assert rate >= 1, rate


def model_cases(directory: Path, tiny_model: Path) -> dict[str, tuple[Path, str]]:
    """case → (model path, what the message must name besides the file)."""
    missing = directory / "missing.onnx"
    text = directory / "text.onnx"
    text.write_text("this is not a model\n")
    plain = tiny_onnx(directory / "nospec.onnx")
    floats = tiny_onnx(directory / "float.onnx", input_type=TensorProto.FLOAT, metadata=json.dumps(clip_spec()))
    classes = tiny_onnx(directory / "classes.onnx", classes=4, metadata=json.dumps(clip_spec()))
    return {
        "model file missing": (missing, "not found"),
        "model file not ONNX": (text, "ONNX"),
        "model without the actionstream.spec metadata": (plain, "actionstream.spec"),
        "model input float32 instead of uint8": (floats, "uint8"),
        "model with 4 classes but 3 labels": (classes, "3 labels"),
    }


def config_cases(model: Path) -> dict[str, tuple[dict, str]]:
    """case → (config, the key the message must name)."""
    camera = {"name": "door", "url": "rtsp://viewer:cam-Pa55@127.0.0.1:1/x"}
    base = {"cameras": [camera], "models": {"m": {"path": str(model)}}}
    return {
        "config: unknown key (cameras[0].modle)": ({**base, "cameras": [{**camera, "modle": "m"}]}, "cameras.0.modle"),
        "config: wrong type (every_s: often)": (
            {**base, "cameras": [{**camera, "every_s": "often"}]},
            "cameras.0.every_s",
        ),
        "config: duplicate camera names": ({**base, "cameras": [camera, camera]}, "duplicate camera names: door"),
        "config: camera URL with an unknown scheme": (
            {**base, "cameras": [camera, {**camera, "name": "yard", "url": "rtps://viewer:cam-Pa55@h/x"}]},
            "cameras.1.url",
        ),
        "config: camera URL with a bad port": (
            {**base, "cameras": [{**camera, "url": "rtsp://viewer:cam-Pa55@h:99999/x"}]},
            "cameras.0.url",
        ),
        "config: MQTT URL with a bad scheme": ({**base, "mqtt": {"url": "http://broker:1883"}}, "mqtt.url"),
        "config: MQTT URL with a bad port": ({**base, "mqtt": {"url": "mqtt://broker:port"}}, "mqtt.url"),
        "config: not YAML": ("cameras: [unclosed", "not valid YAML"),
    }


def run_fatal(config_file: Path):
    """`run` on a config that must not start; says whether anything started (metrics served, a camera opened)."""
    done = run_cli("run", "-c", str(config_file), timeout=60)
    started = any(s in done.stderr for s in ("metrics on", "stream up", "MQTT: connecting"))
    return done, started


def test_bad_model_files_stop_run_before_it_starts(tiny_model, stream_file, tmp_path, record):
    for case, (model, needle) in model_cases(tmp_path, tiny_model).items():
        config_file = tmp_path / f"{model.stem}.yaml"
        config = {"cameras": [file_camera("door", stream_file)], "models": {"m": {"path": str(model)}}}
        config_file.write_text(yaml.safe_dump(config))
        done, started = run_fatal(config_file)
        errors = error_lines(done.stderr)
        named = len(errors) == 1 and str(model) in errors[0] and needle in errors[0]
        record.row(
            4,
            case,
            f"`run` exits 2 before starting, one error line naming the file and {needle!r}",
            f"exit {done.returncode}; error lines: {len(errors)}; names file and {needle!r}: {named}; "
            f"started: {started}; traceback: {'Traceback' in done.stderr}",
        )
        assert done.returncode == 2 and named and not started and "Traceback" not in done.stderr, done.stderr


def test_bad_configs_stop_run_before_it_starts(tiny_model, tmp_path, record):
    for i, (case, (config, needle)) in enumerate(config_cases(tiny_model).items()):
        config_file = tmp_path / f"config{i}.yaml"
        config_file.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
        done, started = run_fatal(config_file)
        errors = error_lines(done.stderr)
        named = len(errors) == 1 and needle in errors[0] and str(config_file) in errors[0]
        leaked = "cam-Pa55" in done.stderr + done.stdout
        record.row(
            4,
            case,
            f"`run` exits 2 before starting, one error line naming the file and {needle!r}",
            f"exit {done.returncode}; error lines: {len(errors)}; names file and {needle!r}: {named}; "
            f"started: {started}; password shown: {leaked}",
        )
        assert done.returncode == 2 and named and not started and not leaked, done.stderr
