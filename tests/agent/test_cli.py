"""``actionstream infer`` on a clip model: windows over the whole video, scored in batches from one decoding pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.cli import BATCH, main
from agent.spec import open_session, read_spec
from agent.video import frame_times, read_clips
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
