"""The synthetic motion set: classes differ by motion only, determinism per seed, list files, scripted stream."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from agent.cli import main
from agent.demo.synthetic import (
    GROUPS,
    MOTIONS,
    Motion,
    draw_shape,
    random_actor,
    render_clip,
    write_dataset,
    write_motion_clip,
    write_scripted_stream,
)
from train.datasets import read_labels, read_video_list

SMALL = {"seconds": 1.0, "width": 96, "height": 72}


def test_classes_cover_the_groups():
    assert len(MOTIONS) >= 8 and "still" in MOTIONS
    assert sorted(m for group in GROUPS.values() for m in group) == sorted(MOTIONS)
    assert len(set(MOTIONS.values())) == len(MOTIONS)  # every class a different motion


def actor_track(motion: str, seed: int) -> np.ndarray:
    actor = random_actor(np.random.default_rng(seed), MOTIONS[motion], 160, 120, 3.0)
    return np.array([actor.state(t) for t in (-1.5, 1.5)])  # (cx, cy, angle, size) at start and end


@pytest.mark.parametrize("seed", range(5))
def test_motions_do_what_their_names_say(seed):
    d = {m: actor_track(m, seed)[1] - actor_track(m, seed)[0] for m in MOTIONS}
    assert d["move_left"][0] < -10 and d["move_right"][0] > 10 and d["move_up"][1] < -10 and d["move_down"][1] > 10
    assert d["rotate_cw"][2] > 1 and d["rotate_ccw"][2] < -1  # radians: clockwise on screen is +angle (y down)
    assert d["grow"][3] > 3 and d["shrink"][3] < -3
    np.testing.assert_allclose(d["still"], 0)
    for m in MOTIONS:  # only the named property changes
        changed = np.abs(d[m]) > 1e-9
        assert changed.sum() == (0 if m == "still" else 1), m


@pytest.mark.parametrize("motion", list(MOTIONS))
def test_actions_stay_inside_the_centre_crop(motion):
    for seed in range(20):
        actor = random_actor(np.random.default_rng(seed), MOTIONS[motion], 160, 120, 3.0)
        for t in np.linspace(-1.5, 1.5, 7):
            cx, cy, _, size = actor.state(t)
            # model sees the centre 120 * 64 / 73 ≈ 105 px square: x in [27.5, 132.5], y in [7.5, 112.5]
            assert 27 <= cx - size and cx + size <= 133 and 7 <= cy - size and cy + size <= 113


@pytest.mark.parametrize(
    "pair", [("move_left", "move_right"), ("move_up", "move_down"), ("rotate_cw", "rotate_ccw"), ("grow", "shrink")]
)
def test_single_frames_do_not_reveal_direction(pair):
    """With the same seed, one class of a pair is the other played backwards: every frame's actor of one clip
    appears in the other, so only the order of frames tells the direction."""
    for seed in range(10):
        a, b = (random_actor(np.random.default_rng(seed), MOTIONS[m], 160, 120, 3.0) for m in pair)
        for t in np.linspace(-1.5, 1.5, 5):
            np.testing.assert_allclose(a.state(t), b.state(-t), atol=1e-9)


def test_draw_shape_rotates_marker():
    a = np.zeros((40, 40, 3), np.float32)
    b = np.zeros((40, 40, 3), np.float32)
    draw_shape(a, "circle", (20, 20), 12, 0.0, (100, 100, 100), (250, 250, 250))
    draw_shape(b, "circle", (20, 20), 12, np.pi, (100, 100, 100), (250, 250, 250))
    assert a[20, 28, 0] == 250 and a[20, 12, 0] == 100  # marker on the +u side
    assert b[20, 12, 0] == 250 and b[20, 28, 0] == 100  # half a turn later: the other side
    with pytest.raises(ValueError, match="unknown shape"):
        draw_shape(a, "hexagon", (20, 20), 5, 0, (1, 1, 1))


def test_same_seed_same_bytes(tmp_path):
    a = write_motion_clip(tmp_path / "a.mp4", "rotate_cw", seed=3, **SMALL)
    b = write_motion_clip(tmp_path / "b.mp4", "rotate_cw", seed=3, **SMALL)
    c = write_motion_clip(tmp_path / "c.mp4", "rotate_cw", seed=4, **SMALL)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    with av.open(str(a)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.codec_context.name) == (96, 72, "h264")
        assert stream.average_rate == 30 and sum(1 for _ in container.decode(stream)) == 30
    frames1 = np.stack(list(render_clip("grow", seed=5, **SMALL)))
    frames2 = np.stack(list(render_clip("grow", seed=5, **SMALL)))
    assert frames1.shape == (30, 72, 96, 3) and np.array_equal(frames1, frames2)


def test_dataset_lists_consistent(tmp_path):
    classes = ("move_left", "still", "shrink")
    paths = write_dataset(tmp_path / "a", clips_per_class=2, val_per_class=1, classes=classes, **SMALL)
    assert read_labels(paths.labels) == list(classes)
    train, val = read_video_list(paths.train), read_video_list(paths.val)
    assert [s.label for s in train] == [0, 0, 1, 1, 2, 2] and [s.label for s in val] == [0, 1, 2]
    for sample in train + val:
        assert sample.path.is_file() and sample.path.parent.name == classes[sample.label]
    assert not {s.path for s in train} & {s.path for s in val}
    again = write_dataset(tmp_path / "b", clips_per_class=2, val_per_class=1, classes=classes, jobs=2, **SMALL)
    for sa, sb in zip(train, read_video_list(again.train), strict=True):
        assert sa.path.read_bytes() == sb.path.read_bytes()  # same seed, any number of jobs: same data
    with pytest.raises(ValueError, match="unknown classes"):
        write_dataset(tmp_path / "c", classes=("jump",))


def test_scripted_stream(tmp_path):
    mp4, js = tmp_path / "s.mp4", tmp_path / "s.json"
    schedule = write_scripted_stream(mp4, js, minutes=0.5, width=96, height=72, seed=1)
    assert json.loads(js.read_text()) == schedule and len(schedule) >= 4
    assert {s["label"] for s in schedule} <= set(MOTIONS) - {"still"}
    previous_end = 0.0
    for s in schedule:
        assert previous_end < s["start"] < s["end"] <= 30.0  # gaps between actions, all within the video
        assert 2.5 <= s["end"] - s["start"] <= 4.0
        previous_end = s["end"]
    with av.open(str(mp4)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 900
    assert (
        write_scripted_stream(tmp_path / "t.mp4", tmp_path / "t.json", minutes=0.5, width=96, height=72, seed=1)
        == schedule
        and (tmp_path / "t.mp4").read_bytes() == mp4.read_bytes()
    )


def test_motion_dataclass_default_is_still():
    assert Motion() == MOTIONS["still"]


def test_synth_writes_dataset_and_stream(tmp_path, capsys):
    argv = [
        "synth",
        str(tmp_path),
        "--clips-per-class",
        "1",
        "--val-per-class",
        "1",
        "--classes",
        "grow",
        "still",
        "--seconds",
        "1",
        "--width",
        "64",
        "--height",
        "48",
        "--stream-minutes",
        "0.2",
    ]
    assert main(argv) == 0
    assert read_labels(tmp_path / "labels.txt") == ["grow", "still"]
    assert [s.label for s in read_video_list(tmp_path / "train.txt")] == [0, 1]
    schedule = json.loads((tmp_path / "stream.json").read_text())
    assert (tmp_path / "stream.mp4").stat().st_size > 0 and all(s["end"] <= 12 for s in schedule)
    assert "stream.mp4" in capsys.readouterr().out


def test_synth_rejects_bad_input(tmp_path, capsys):
    assert main(["synth", str(tmp_path), "--classes", "jump"]) == 2
    assert "unknown classes" in capsys.readouterr().err
    assert main(["synth", str(tmp_path), "--width", "63"]) == 2
    assert "even" in capsys.readouterr().err
