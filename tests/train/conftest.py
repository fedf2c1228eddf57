"""Tiny generated data shared by the train tests (rendered once per session, seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.demo.synthetic import write_dataset

TINY_CLASSES = ("move_right", "grow", "still")


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory) -> Path:
    """3 classes × (4 train + 2 val) clips of 2.4 s, 96x72: ``train.txt``, ``val.txt``, ``labels.txt``."""
    root = tmp_path_factory.mktemp("tiny-synth")
    write_dataset(root, clips_per_class=4, val_per_class=2, seconds=2.4, width=96, height=72, classes=TINY_CLASSES)
    return root
