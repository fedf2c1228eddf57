"""The trainer's command line (the train/evaluate runs are covered in test_trainer.py)."""

from __future__ import annotations

from train.cli import parser


def test_train_flags_map_to_config_keys():
    args = parser().parse_args(["train", "--train", "t.txt", "--flip-pair", "a", "b", "--area-range", "0.5", "1"])
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    assert given == {"data.train": "t.txt", "augment.flip_pairs": [["a", "b"]], "augment.area_range": [0.5, 1.0]}
