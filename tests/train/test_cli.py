"""``synth`` through the CLI (the train/evaluate paths are covered in test_trainer.py)."""

from __future__ import annotations

import json

from train.cli import main, parser
from train.datasets import read_labels, read_video_list


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


def test_train_flags_map_to_config_keys():
    args = parser().parse_args(["train", "--train", "t.txt", "--flip-pair", "a", "b", "--area-range", "0.5", "1"])
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    assert given == {"data.train": "t.txt", "augment.flip_pairs": [["a", "b"]], "augment.area_range": [0.5, 1.0]}
