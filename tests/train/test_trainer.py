"""The trainer end to end on a tiny generated set: loss goes down, checkpoints and plots are written, resume
continues where a run stopped (and matches an uninterrupted run), evaluate reproduces the final validation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from export.checkpoints import read_checkpoint
from train.cli import main
from train.config import OptimConfig, build_config
from train.evaluate import evaluate
from train.trainer import lr_at, train


def tiny_config(root, out, **optim):
    return build_config(
        {
            "data": {
                "train": str(root / "train.txt"),
                "val": str(root / "val.txt"),
                "labels": str(root / "labels.txt"),
                "cache": True,
            },
            "model": {"arch": "slowonly_r50_8x8", "depth": 18, "width": 8, "size": 64, "dropout": 0.0},
            "augment": {"area_range": (0.6, 1.0)},
            # 6 steps per epoch: the mean loss of epoch 2 is below epoch 1's by 0.05–0.2 over seeds 0–5
            "optim": {"epochs": 2, "batch_size": 2, "lr": 0.05, **optim},
            "out_dir": str(out),
            "progress": False,
        }
    )


@pytest.fixture(scope="module")
def two_epochs(tiny_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return tiny_config(tiny_set, out), train(tiny_config(tiny_set, out))


def test_training_lowers_loss_and_writes_outputs(two_epochs):
    cfg, result = two_epochs
    losses = [r["train_loss"] for r in result.history]
    assert len(losses) == 2 and losses[1] < losses[0] - 0.02
    out = cfg.out_dir
    for name in ("epoch_1.pth", "epoch_2.pth", "confusion.png", "curves.png", "metrics.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "metrics.json").read_text()) == result.history
    ckpt = read_checkpoint(result.checkpoint)
    assert result.checkpoint == out / "epoch_2.pth"
    assert ckpt.arch == "slowonly_r50_8x8" and ckpt.model_args == {
        "num_classes": 3,
        "depth": 18,
        "width": 8,
        "dropout": 0.0,
    }
    assert ckpt.labels == ["move_right", "grow", "still"] and ckpt.extra["epoch"] == 2
    assert ckpt.extra["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert ckpt.extra["config"]["model"]["size"] == 64


def test_resume_continues_from_saved_epoch(two_epochs, tmp_path, capsys):
    """Resume the 2-epoch run's epoch_1.pth (its stored config; only the output folder changed): the result is
    the uninterrupted run's epoch 2."""
    cfg, reference = two_epochs
    assert main(["train", "--resume", str(cfg.out_dir / "epoch_1.pth"), "--out-dir", str(tmp_path)]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert not (tmp_path / "epoch_1.pth").exists()  # epoch 1 was not trained again
    resumed = read_checkpoint(tmp_path / "epoch_2.pth")
    assert resumed.extra["epoch"] == 2 and len(resumed.extra["history"]) == 2
    assert resumed.extra["history"][0] == reference.history[0]
    expected = read_checkpoint(reference.checkpoint).state_dict
    for key, value in resumed.state_dict.items():
        torch.testing.assert_close(value, expected[key], msg=key)


def test_evaluate_reproduces_final_validation(two_epochs, tiny_set, tmp_path):
    _, result = two_epochs
    metrics, labels = evaluate(result.checkpoint, tiny_set / "val.txt", confusion_png=tmp_path / "c.png")
    assert labels == result.labels
    assert metrics.top1 == result.final.top1 and metrics.top5 == result.final.top5
    assert metrics.mean_class_accuracy == result.final.mean_class_accuracy
    assert metrics.loss == pytest.approx(result.final.loss, abs=1e-5)
    assert (metrics.confusion == result.final.confusion).all() and (tmp_path / "c.png").is_file()


def test_cli_evaluate_and_errors(two_epochs, tiny_set, tmp_path, capsys):
    _, result = two_epochs
    out = tmp_path / "m.json"
    assert main(["evaluate", str(result.checkpoint), str(tiny_set / "val.txt"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["top1"] == result.final.top1
    assert "move_right" in capsys.readouterr().out
    assert main(["train", "--train", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt: no such list file" in capsys.readouterr().err
    assert main(["train", "--train", "t.txt", "--depth", "18", "--area-range", "0.5", "0.1"]) == 2
    assert "augment.area_range" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "--train (or --config, or --resume) is required" in capsys.readouterr().err


def test_load_from_resets_head_for_new_classes(two_epochs, tiny_set, tmp_path, capsys):
    _, result = two_epochs
    two = tmp_path / "two.txt"
    two.write_text(
        "".join(
            line + "\n" for line in (tiny_set / "train.txt").read_text().splitlines() if line.endswith((" 0", " 1"))
        )
    )
    cfg = build_config(
        {
            "data": {"train": str(two), "root": str(tiny_set), "cache": True},
            "model": {"arch": "slowonly_r50_8x8", "depth": 18, "width": 8, "size": 64},
            "optim": {"epochs": 1, "batch_size": 4},
            "load_from": str(result.checkpoint),
            "out_dir": str(tmp_path / "ft"),
            "progress": False,
        }
    )
    fine = train(cfg)
    assert "new 2-class head" in capsys.readouterr().out
    ckpt = read_checkpoint(fine.checkpoint)
    assert ckpt.num_classes == 2 and ckpt.labels == ["0", "1"]


def test_lr_schedules():
    cosine = OptimConfig(epochs=10, lr=0.1, warmup_epochs=1)
    assert lr_at(0, cosine) == pytest.approx(0.01) and lr_at(0.5, cosine) == pytest.approx(0.055)
    assert lr_at(1, cosine) == pytest.approx(0.1) and lr_at(5.5, cosine) == pytest.approx(0.05)
    assert lr_at(10, cosine) == pytest.approx(0.0, abs=1e-12)
    step = OptimConfig(epochs=10, lr=0.1, schedule="step", milestones=[4, 8])
    assert [lr_at(e, step) for e in (0, 3.9, 4, 7.5, 8)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    assert math.isclose(lr_at(2.5, OptimConfig(epochs=4, lr=1.0)), 0.5 * (1 + math.cos(math.pi * 2.5 / 4)))


@pytest.mark.parametrize(
    ("arch", "model"),
    [
        ("tsm_r50_1x1x8", {"depth": 18, "width": 8}),
        ("x3d_s_13x6x1", {"width": 8}),
        ("c3d_sports1m", {"width": 8}),
    ],
)
def test_new_archs_train_and_evaluate(tiny_set, tmp_path, arch, model):
    """One epoch of each new family's small model: its checkpoint rebuilds the model (segments, crop) and evaluate
    reproduces the validation."""
    cfg = build_config(
        {
            "data": {"train": str(tiny_set / "train.txt"), "val": str(tiny_set / "val.txt"), "cache": True},
            "model": {"arch": arch, "size": 64, **model},
            "sampling": {"segments": 4},
            "optim": {"epochs": 1, "batch_size": 4},
            "out_dir": str(tmp_path),
            "progress": False,
        }
    )
    result = train(cfg)
    ckpt = read_checkpoint(result.checkpoint)
    assert ckpt.model_args == cfg.model_args(3)
    assert ckpt.model_args.get("segments") == (4 if arch.startswith("tsm") else None)
    assert ckpt.model_args.get("size") == (64 if arch.startswith("c3d") else None)
    metrics, _ = evaluate(result.checkpoint, tiny_set / "val.txt")
    assert metrics.top1 == pytest.approx(result.final.top1)
