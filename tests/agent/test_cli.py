"""``actionstream infer`` on a clip model: windows over the whole video, scored in batches from one decoding pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.cli import main
from agent.offline.infer import BATCH
from agent.offline.video import frame_times, read_clips
from agent.spec import open_session, read_spec
from tests.videos import pattern_video


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return pattern_video(tmp_path_factory.mktemp("infer") / "testsrc.mp4", 12, "160x120", 15, "testsrc")


def test_infer_scores_every_window_as_the_model_scores_that_clip_alone(video, tiny_model, tmp_path):
    out = tmp_path / "timeline.json"
    assert main(["infer", str(video), "--model", str(tiny_model), "--every", "0.5", "--json", str(out)]) == 0
    timeline = json.loads(out.read_text())["timeline"]
    assert len(timeline) > 2 * BATCH  # several batches, and a partial last one
    session = open_session(tiny_model)
    spec = read_spec(session, str(tiny_model))
    first = float(frame_times(video).min())
    ends = [first + spec.span_s + 0.5 * i for i in range(len(timeline))]  # the windows, unrounded
    assert [w["end"] for w in timeline] == [round(e, 3) for e in ends]
    for end, window in list(zip(ends, timeline, strict=True))[:: BATCH - 1]:  # a spread, batch edges included
        clip = read_clips(video, spec, [end])[0]
        scores = session.run(None, {k: v[None] for k, v in clip.inputs.items()})[0][0]
        label, score = window["top"][0]
        assert label == spec.labels[int(np.argmax(scores))]
        assert score == pytest.approx(float(scores.max()), abs=1e-5)


def test_infer_on_a_damaged_file_scores_the_part_that_decodes(shared_data, tiny_model, tmp_path):
    """corrupted.mp4: 50 packets, 28 decodable frames. The windows planned from the packets that need a frame past
    the last decodable one are dropped; the others, up to the first frame that does not decode, are all there."""
    path = shared_data / "decord/tests/test_data/corrupted.mp4"
    out = tmp_path / "timeline.json"
    assert main(["infer", str(path), "--model", str(tiny_model), "--every", "0.1", "--json", str(out)]) == 0
    ends = [w["end"] for w in json.loads(out.read_text())["timeline"]]
    promised, decoded = frame_times(path), frame_times(path, decode=True)
    assert len(promised) == 50 and len(decoded) == 28
    span = read_spec(open_session(tiny_model), str(tiny_model)).span_s
    expected = np.arange(float(decoded.min()) + span, float(promised[len(decoded)]), 0.1)
    assert ends == [round(float(e), 3) for e in expected] and ends


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")


@pytest.fixture(scope="module")
def arch_models(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """A tiny random-weight export of each arch family, with its own clip span (TSN: a 4 s window)."""
    from export import to_onnx

    work = tmp_path_factory.mktemp("archs")
    labels = work / "labels.txt"
    labels.write_text("a\nb\nc\n")
    small = ["--depth", "18", "--width", "8", "--size", "32", "--labels", str(labels)]
    models = {"slowfast_r50_4x16": tiny_model}
    for arch in ("tsn_r50", "i3d_r50", "slowonly_r50_8x8"):
        out = work / f"{arch}.onnx"
        assert to_onnx.main(["--arch", arch, *small, "--out", str(out)]) == 0
        models[arch] = out
    return models


def test_infer_on_every_real_video_with_every_arch_never_ends_in_a_traceback(shared_data, arch_models, capsys):
    """Each real video of the shared data (rotated, VFR, AVI, damaged, GIF, a few frames) through each arch's window:
    a timeline (exit 0) or one clear error line (exit 2), never an exception."""
    videos = sorted(p for p in shared_data.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    assert len(videos) >= 10
    outcomes = {}
    for video in videos:
        for arch, model in arch_models.items():
            code = main(["infer", str(video), "--model", str(model), "--top-k", "1"])
            err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
            outcomes[(video.name, arch)] = code
            assert code == 0 or (code == 2 and len(err) == 1 and str(video) in err[0]), (video, arch, code, err)
    assert sum(code == 0 for code in outcomes.values()) >= len(outcomes) // 2
