"""``actionstream train | evaluate``: argparse front ends of the trainer and of evaluation.

    actionstream synth .cache/synth --clips-per-class 40 --val-per-class 10     # the data (torch-free)
    actionstream train --train .cache/synth/train.txt --val .cache/synth/val.txt --labels .cache/synth/labels.txt \\
        --arch slowonly_r50_8x8 --depth 18 --width 8 --size 64 --epochs 10 --lr 0.05 --out-dir .cache/runs/so
    actionstream train --config train.yaml --epochs 30        # flags override the file
    actionstream train --resume .cache/runs/so/epoch_5.pth    # the checkpoint's own config; flags still override
    actionstream evaluate .cache/runs/so/epoch_10.pth .cache/synth/val.txt
    actionstream train ... --arch tsn_r50 --modality flow --flow-method farneback     # TSN on optical flow
    actionstream evaluate rgb/epoch_25.pth val.txt --fuse flow/epoch_25.pth --weights 1 1.5   # two-stream fusion
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.errors import ActionstreamError, ConfigError
from agent.spec import FLOW_METHODS
from export.checkpoints import read_checkpoint
from export.models import ARCHS
from train.config import build_config, load_config, merge

# flag → dotted config key (flags left out are not set, so the file / checkpoint / default applies)
TRAIN_FLAGS: dict[str, tuple[str, dict]] = {
    "--train": ("data.train", {"help": "training list file or class folders"}),
    "--val": ("data.val", {"help": "validation list file or class folders"}),
    "--root": ("data.root", {"help": "data root for list paths (default: the list's folder)"}),
    "--format": ("data.format", {"choices": ["video", "rawframes"], "help": "list format (default video)"}),
    "--labels": ("data.labels", {"help": "class names, one per line"}),
    "--cache": ("data.cache", {"action": "store_true", "help": "keep decoded frames in memory (small sets)"}),
    "--fps": ("data.fps", {"type": float, "help": "frame rate of the data (default 30), for the export"}),
    "--modality": (
        "model.modality",
        {
            "choices": ["rgb", "flow"],
            "help": "rgb frames or optical flow (default: the arch's; flow: its flow variant)",
        },
    ),
    "--flow-method": (
        "data.flow_method",
        {"choices": list(FLOW_METHODS), "help": "flow: how the videos' flow is made (default tvl1, MMAction2's)"},
    ),
    "--flow-bound": ("data.flow_bound", {"type": float, "help": "flow: ±pixels mapped to 0-255 (default 20)"}),
    "--flow-cache": ("data.flow_cache", {"help": "flow: where each video's flow is cached (default <root>/.flow)"}),
    "--arch": ("model.arch", {"choices": list(ARCHS), "help": "architecture (default slowonly_r50_8x8)"}),
    "--depth": (
        "model.depth",
        {"type": int, "choices": [18, 34, 50, 101, 152], "help": "ResNet depth (default: the arch's, 50 for most)"},
    ),
    "--width": ("model.width", {"type": int, "help": "base channels (default: the arch's, 64 for ResNets)"}),
    "--dropout": ("model.dropout", {"type": float, "help": "head dropout (default: the arch's)"}),
    "--size": ("model.size", {"type": int, "help": "crop size (default: the arch's test crop, 224 for most)"}),
    "--resize-short": (
        "model.resize_short",
        {"type": int, "help": "short side before cropping (default: the arch's, e.g. size*256/224)"},
    ),
    "--frames": ("sampling.frames", {"type": int, "help": "3D: frames per clip (default: the arch's)"}),
    "--interval": ("sampling.interval", {"type": int, "help": "3D: frame interval (default: the arch's)"}),
    "--segments": ("sampling.segments", {"type": int, "help": "TSN/TSM: segments (default: the arch's, 8)"}),
    "--test-clips": ("sampling.test_clips", {"type": int, "help": "3D: clips per video at validation (default 1)"}),
    "--repeats": ("sampling.repeats", {"type": int, "help": "training clips per decoded video (default 1)"}),
    "--area-range": (
        "augment.area_range",
        {"type": float, "nargs": 2, "metavar": ("LO", "HI"), "help": "RandomResizedCrop area range (default 0.08 1)"},
    ),
    "--aspect-range": (
        "augment.aspect_ratio_range",
        {
            "type": float,
            "nargs": 2,
            "metavar": ("LO", "HI"),
            "help": "RandomResizedCrop aspect range (default 0.75 1.33)",
        },
    ),
    "--flip": ("augment.flip", {"type": float, "help": "horizontal flip probability (default 0.5)"}),
    "--flip-pair": (
        "augment.flip_pairs",
        {"nargs": 2, "action": "append", "metavar": ("A", "B"), "help": "labels a flip swaps (repeatable)"},
    ),
    "--epochs": ("optim.epochs", {"type": int, "help": "total epochs (default 20)"}),
    "--batch-size": ("optim.batch_size", {"type": int, "help": "videos per step (default 8)"}),
    "--lr": ("optim.lr", {"type": float, "help": "peak learning rate (default 0.01; scale with the batch)"}),
    "--momentum": ("optim.momentum", {"type": float, "help": "SGD momentum (default 0.9)"}),
    "--weight-decay": ("optim.weight_decay", {"type": float, "help": "SGD weight decay (default 1e-4)"}),
    "--schedule": ("optim.schedule", {"choices": ["step", "cosine"], "help": "lr schedule (default cosine)"}),
    "--milestones": ("optim.milestones", {"type": int, "nargs": "+", "help": "step: epochs where lr *= gamma"}),
    "--gamma": ("optim.gamma", {"type": float, "help": "step: lr factor (default 0.1)"}),
    "--warmup-epochs": ("optim.warmup_epochs", {"type": float, "help": "linear warm-up epochs (default 0)"}),
    "--clip-grad": ("optim.clip_grad", {"type": float, "help": "max gradient norm (default 40)"}),
    "--out-dir": ("out_dir", {"help": "where checkpoints and plots go (default work_dirs/train)"}),
    "--seed": ("seed", {"type": int, "help": "random seed (default 0)"}),
    "--checkpoint-every": ("checkpoint_every", {"type": int, "help": "save every N epochs (default 1)"}),
    "--load-from": ("load_from", {"help": "initial weights (MMAction2 or ours); new head if classes differ"}),
    "--resume": ("resume", {"help": "continue a run from its checkpoint"}),
    "--workers": ("num_workers", {"type": int, "help": "DataLoader workers (default 1)"}),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionstream", description="train and evaluate models")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (config file and/or flags)")
    t.add_argument("--config", type=Path, help="YAML config (see train/config.py); flags override it")
    for flag, (key, kwargs) in TRAIN_FLAGS.items():
        t.add_argument(flag, dest=key, default=argparse.SUPPRESS, **kwargs)
    t.add_argument(
        "--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS, help="no progress bars"
    )

    e = sub.add_parser("evaluate", help="evaluate a trainer checkpoint on a list file or class folders")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("data", type=Path, help="list file or class folders")
    e.add_argument("--root", type=Path, help="data root for list paths (default: the list's folder)")
    e.add_argument("--format", choices=["video", "rawframes"], help="list format (default: as trained)")
    e.add_argument("--batch-size", type=int, help="default: as trained")
    e.add_argument("--test-clips", type=int, help="3D: clips per video, scores averaged (default: as trained)")
    e.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    e.add_argument("--confusion", type=Path, help="write a confusion-matrix PNG here")
    e.add_argument("--json", type=Path, help="write the metrics as JSON here")
    e.add_argument(
        "--flow-method", choices=FLOW_METHODS, help="flow models: flow made this way (default: as trained), e.g. dis"
    )
    e.add_argument(
        "--fuse",
        type=Path,
        action="append",
        metavar="CHECKPOINT",
        help="also evaluate this checkpoint (another stream) and report the fused scores too (repeatable)",
    )
    e.add_argument(
        "--weights", type=float, nargs="+", help="fusion weights, the first checkpoint's first (default: all 1)"
    )

    return p


def _train_config(args: argparse.Namespace):
    flags: dict = {}
    for key, value in vars(args).items():
        if key in ("command", "config"):
            continue
        node = flags
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    if args.config is not None:
        return load_config(args.config, flags)
    if "resume" in flags and "train" not in flags.get("data", {}):
        saved = read_checkpoint(flags["resume"]).extra.get("config")
        if not isinstance(saved, dict):
            raise ConfigError(f"{flags['resume']}: has no stored config; pass --config or flags as well")
        return build_config(merge(saved, flags), source=f"{flags['resume']} (stored config) + flags")
    if "train" not in flags.get("data", {}):
        raise ConfigError("train: --train (or --config, or --resume) is required")
    return build_config(flags, source="command-line flags")


def run_train(args: argparse.Namespace) -> int:
    from train.trainer import train

    result = train(_train_config(args))
    if result.final is not None:
        f = result.final
        print(f"final: top-1 {f.top1:.4f} top-5 {f.top5:.4f} mean class accuracy {f.mean_class_accuracy:.4f}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from train.evaluate import evaluate, evaluate_fused, format_report

    options = {
        "root": args.root,
        "fmt": args.format,
        "batch_size": args.batch_size,
        "test_clips": args.test_clips,
        "num_workers": args.workers,
        "progress": True,
        "flow_method": args.flow_method,
        "confusion_png": args.confusion,
    }
    if args.fuse:
        checkpoints = [args.checkpoint, *args.fuse]
        weights = args.weights or [1.0] * len(checkpoints)
        if len(weights) != len(checkpoints):
            raise ConfigError(f"--weights: {len(checkpoints)} checkpoints need {len(checkpoints)} weights")
        metrics, labels, each = evaluate_fused(checkpoints, weights, args.data, **options)
        for path, weight, alone in zip(checkpoints, weights, each, strict=True):
            print(f"{path} (weight {weight:g}):\n{format_report(alone, labels, per_class=False)}")
        print(f"fused ({' + '.join(f'{w:g} x {p}' for w, p in zip(weights, checkpoints, strict=True))}):")
    else:
        metrics, labels = evaluate(args.checkpoint, args.data, **options)
    print(format_report(metrics, labels))
    if args.json is not None:
        payload = {
            **metrics.summary(),
            "count": metrics.count,
            "per_class": dict(zip(labels, metrics.per_class, strict=True)),
            "confusion": metrics.confusion.tolist(),
            "labels": labels,
        }
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = {"train": run_train, "evaluate": run_evaluate}[args.command]
    try:
        return command(args)
    except ActionstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
