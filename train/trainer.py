"""The trainer: a short loop of plain functions over a :class:`~train.config.TrainConfig`.

    cfg = build_config({"data": {"train": "train.txt", "val": "val.txt"}, "model": {"depth": 18, "width": 8}})
    result = train(cfg)

What it does, MMAction2's recipe by default: SGD (momentum 0.9, weight decay 1e-4), cross-entropy, gradient L2
norm clipped at 40, a step or cosine schedule (optionally after a linear warm-up) set every iteration, validation
after every epoch (top-1, top-5, mean class accuracy), a checkpoint every ``checkpoint_every`` epochs and after the
last, and at the end ``confusion.png`` (last validation) and ``curves.png`` (loss and accuracy per epoch) plus
``metrics.json``.

Learning rate: ``optim.lr`` is for ``optim.batch_size``. MMAction2 configs quote theirs for 8 GPUs × N videos;
on a different total batch scale it linearly (``lr × batch / reference_batch``) — the linear scaling rule.

Checkpoints are our format (``export.checkpoints``): weights, ``arch``, ``model_args`` (enough to rebuild the model
without this script; ``export/to_onnx.py --checkpoint`` reads them), ``labels``, and ``epoch`` (completed),
``optimizer`` (its state), ``history`` and ``config``, which ``resume`` uses to continue where the run stopped.
The learning-rate schedule is a pure function of the epoch position, so its state is the epoch.

Randomness is seeded per epoch (``seed + epoch`` for weights' dropout and shuffling; (seed, epoch, index) for each
clip's sampling and augmentation), so a resumed run draws the same clips as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from agent.errors import CheckpointError, ConfigError, DatasetError
from export.checkpoints import load_weights, read_checkpoint, save_checkpoint
from export.models import ARCHS, build_model
from train.config import OptimConfig, TrainConfig
from train.datasets import ClipDataset, Sample, check_labels, load_samples, read_labels
from train.evaluate import Metrics, compute_metrics, plot_confusion, predict
from train.flows import FlowCache, FlowSettings, prepare
from train.pipelines import pipeline_for


@dataclass
class TrainResult:
    checkpoint: Path  # the last one written
    history: list[dict] = field(default_factory=list)  # one entry per epoch
    final: Metrics | None = None  # last validation
    labels: list[str] = field(default_factory=list)


# --- data -------------------------------------------------------------------------------------------------------


def load_data(cfg: TrainConfig) -> tuple[list[str], list[Sample], list[Sample]]:
    """(labels, train samples, val samples) with every label checked against the class count."""
    train_samples, folder_classes = load_samples(cfg.data.train, root=cfg.data.root, fmt=cfg.data.format)
    val_samples: list[Sample] = []
    if cfg.data.val is not None:
        val_samples, val_classes = load_samples(cfg.data.val, root=cfg.data.root, fmt=cfg.data.format)
        if folder_classes and val_classes and val_classes != folder_classes:
            raise DatasetError(f"{cfg.data.val}: class folders {val_classes} differ from {cfg.data.train}'s")
    if cfg.data.labels is not None:
        labels = read_labels(cfg.data.labels)
    elif folder_classes:
        labels = folder_classes
    else:
        labels = [str(i) for i in range(max(s.label for s in train_samples + val_samples) + 1)]
    check_labels(train_samples, len(labels), cfg.data.train)
    if val_samples:
        check_labels(val_samples, len(labels), cfg.data.val)
    return labels, train_samples, val_samples


def flow_cache(cfg: TrainConfig) -> FlowCache | None:
    """Flow models: where the videos' flow is cached (``data.flow_cache``, default ``<data root>/.flow``)."""
    if cfg.model.modality != "flow":
        return None
    train = Path(cfg.data.train)
    root = cfg.data.root or (train if train.is_dir() else train.parent)
    settings = FlowSettings(cfg.data.flow_method, cfg.data.flow_bound, cfg.model.short_side, cfg.model.resize_to)
    return FlowCache(cfg.data.flow_cache or root / ".flow", root, settings)


def prepare_flow(cfg: TrainConfig, cache: FlowCache | None, samples: list[Sample]) -> None:
    """Computes the flow of the videos not cached yet, one process per core, before the first epoch."""
    videos = [s.path for s in samples if s.num_frames is None]
    if cache is not None and videos:
        t0 = time.monotonic()
        if prepare(cache, videos, jobs=len(os.sched_getaffinity(0)), progress=cfg.progress):
            print(f"optical flow ready ({time.monotonic() - t0:.0f} s)", flush=True)


def make_loader(dataset: ClipDataset, cfg: TrainConfig, *, shuffle: bool, epoch: int) -> DataLoader:
    dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    return DataLoader(
        dataset,
        batch_size=cfg.optim.batch_size,
        shuffle=shuffle,
        drop_last=shuffle and len(dataset) > cfg.optim.batch_size,
        num_workers=cfg.workers,
        generator=generator,
    )


# --- model and optimiser ----------------------------------------------------------------------------------------


def init_weights(model: nn.Module) -> None:
    """MMAction2's initialisation for training from scratch: Kaiming-normal (fan-out) convolutions (biases 0),
    BatchNorm 1/0 except a zero scale on each residual block's last BatchNorm (``zero_init_residual``), fully
    connected layers drawn from N(0, 0.005²) in the backbone (C3D's) and N(0, 0.01²) in the head. Blocks are
    recognised by their ``downsample`` attribute; their last conv is ``conv3`` (bottleneck) or ``conv2`` (basic)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        last = getattr(m, "conv3", None) or getattr(m, "conv2", None)
        if hasattr(m, "downsample") and getattr(last, "bn", None) is not None:
            nn.init.zeros_(last.bn.weight)
    for part, std in ((model.backbone, 0.005), (model.cls_head, 0.01)):
        for m in part.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def make_model(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, dict]:
    """The model, initialised as MMAction2 does, then ``load_from``'s weights if given (new head if the class
    count differs); returns it with its ``model_args``."""
    torch.manual_seed(cfg.seed)
    model_args = cfg.model_args(num_classes)
    model = build_model(cfg.model.arch, **model_args)
    init_weights(model)
    if cfg.load_from is not None:
        ckpt = read_checkpoint(cfg.load_from)
        reset = ckpt.num_classes != num_classes
        load_weights(model, ckpt, reset_head=reset)
        note = f", new {num_classes}-class head" if reset else ""
        print(f"loaded weights from {cfg.load_from}{note}", flush=True)
    return model, model_args


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)


def lr_at(position: float, optim: OptimConfig) -> float:
    """Learning rate at ``position`` epochs into training (fractional within an epoch)."""
    if position < optim.warmup_epochs:
        start = optim.lr / 10
        return start + (optim.lr - start) * position / optim.warmup_epochs
    if optim.schedule == "step":
        return optim.lr * optim.gamma ** sum(1 for m in optim.milestones if int(position) >= m)
    span = max(optim.epochs - optim.warmup_epochs, 1e-9)
    return optim.lr * 0.5 * (1 + math.cos(math.pi * min((position - optim.warmup_epochs) / span, 1.0)))


def resume_from(path: Path, cfg: TrainConfig, model: nn.Module, model_args: dict, optimizer) -> tuple[int, list]:
    """Load weights and optimizer state; returns (completed epochs, history)."""
    ckpt = read_checkpoint(path)
    if ckpt.arch is None or "optimizer" not in ckpt.extra or "epoch" not in ckpt.extra:
        raise CheckpointError(f"{path}: not a trainer checkpoint (needs arch, epoch and optimizer state to resume)")
    if ckpt.arch != cfg.model.arch or ckpt.model_args != model_args:
        raise ConfigError(
            f"{path}: checkpoint is {ckpt.arch} {ckpt.model_args}, but the config asks for "
            f"{cfg.model.arch} {model_args}; resume needs the same model"
        )
    load_weights(model, ckpt)
    optimizer.load_state_dict(ckpt.extra["optimizer"])
    return int(ckpt.extra["epoch"]), list(ckpt.extra.get("history", []))


# --- the loop ---------------------------------------------------------------------------------------------------


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer, cfg: TrainConfig, epoch: int) -> dict[str, float]:
    model.train()
    torch.manual_seed(cfg.seed * 100_003 + epoch)
    total_loss = total_correct = total_seen = 0
    steps = len(loader)
    lr = lr_at(epoch, cfg.optim)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", disable=not cfg.progress, leave=False)
    for step, (inputs, labels) in enumerate(bar):
        lr = lr_at(epoch + step / steps, cfg.optim)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(*(x.flatten(0, 1) for x in inputs))  # [B, repeats, ...] → [B·repeats, ...]
        labels = labels.flatten()
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.clip_grad is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
        optimizer.step()
        n = len(labels)
        total_loss += loss.item() * n
        total_correct += int((logits.argmax(1) == labels).sum())
        total_seen += n
        bar.set_postfix(loss=f"{total_loss / total_seen:.3f}", lr=f"{lr:.2e}")
    return {"train_loss": total_loss / max(total_seen, 1), "train_top1": total_correct / max(total_seen, 1), "lr": lr}


def save(path: Path, model, optimizer, cfg: TrainConfig, model_args: dict, labels, epoch: int, history) -> Path:
    save_checkpoint(
        path,
        model,
        arch=cfg.model.arch,
        model_args=model_args,
        labels=labels,
        epoch=epoch,
        optimizer=optimizer.state_dict(),
        history=history,
        config=cfg.model_dump(mode="json"),
    )
    return path


def train(cfg: TrainConfig) -> TrainResult:
    """Train as ``cfg`` says; returns the last checkpoint's path, the per-epoch history and the final metrics."""
    labels, train_samples, val_samples = load_data(cfg)
    model, model_args = make_model(cfg, len(labels))
    optimizer = make_optimizer(model, cfg.optim)
    start, history = 0, []
    if cfg.resume is not None:
        start, history = resume_from(cfg.resume, cfg, model, model_args, optimizer)
        print(f"resumed from {cfg.resume} after epoch {start}", flush=True)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_pipeline = pipeline_for(cfg, labels, test_mode=False)
    flow = flow_cache(cfg)
    prepare_flow(cfg, flow, train_samples + val_samples)
    train_set = ClipDataset(
        train_samples, train_pipeline, seed=cfg.seed, repeats=cfg.sampling.repeats, cache=cfg.data.cache, flow=flow
    )
    val_pipeline = pipeline_for(cfg, labels, test_mode=True)
    val_set = ClipDataset(val_samples, val_pipeline, seed=cfg.seed, cache=cfg.data.cache, flow=flow)
    on = f", on {cfg.data.flow_method} flow" if cfg.model.modality == "flow" else ""
    print(
        f"{cfg.model.arch} {', '.join(f'{k} {v}' for k, v in model_args.items() if k != 'num_classes')}, "
        f"size {cfg.model.size}{on}: "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {len(labels)} classes, "
        f"{len(train_samples)} train / {len(val_samples)} val videos, epochs {start + 1}..{cfg.optim.epochs}",
        flush=True,
    )
    _warn_if_export_differs(cfg)
    result = TrainResult(checkpoint=Path(cfg.resume or out / f"epoch_{start}.pth"), history=history, labels=labels)
    for epoch in range(start, cfg.optim.epochs):
        t0 = time.monotonic()
        record = {
            "epoch": epoch + 1,
            **train_one_epoch(model, make_loader(train_set, cfg, shuffle=True, epoch=epoch), optimizer, cfg, epoch),
        }
        if val_samples:
            probs, truth = predict(model, make_loader(val_set, cfg, shuffle=False, epoch=0), progress=cfg.progress)
            result.final = compute_metrics(probs, truth)
            record.update({f"val_{k}": v for k, v in result.final.summary().items()})
        record["seconds"] = round(time.monotonic() - t0, 2)
        if cfg.data.cache and epoch == start:
            print(f"frame cache: {(train_set.cache_bytes() + val_set.cache_bytes()) / 2**20:.0f} MiB", flush=True)
        history.append(record)
        print(_epoch_line(record), flush=True)
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.optim.epochs:
            result.checkpoint = save(
                out / f"epoch_{epoch + 1}.pth", model, optimizer, cfg, model_args, labels, epoch + 1, history
            )
    (out / "metrics.json").write_text(json.dumps(history, indent=1) + "\n")
    if history:
        plot_curves(history, out / "curves.png")
    if result.final is not None:
        plot_confusion(
            result.final.confusion,
            labels,
            out / "confusion.png",
            title=f"{cfg.model.arch} epoch {history[-1]['epoch']}: top-1 {result.final.top1:.3f}",
        )
    print(f"checkpoint: {result.checkpoint}\nexport: {export_command(cfg, result.checkpoint)}", flush=True)
    return result


def _epoch_line(r: dict) -> str:
    line = f"epoch {r['epoch']}: loss {r['train_loss']:.4f} train top-1 {r['train_top1']:.3f} lr {r['lr']:.2e}"
    if "val_top1" in r:
        line += (
            f" | val loss {r['val_loss']:.4f} top-1 {r['val_top1']:.4f} top-5 {r['val_top5']:.4f}"
            f" mean class {r['val_mean_class_accuracy']:.4f}"
        )
    return line + f" ({r['seconds']:.1f} s)"


def _warn_if_export_differs(cfg: TrainConfig) -> None:
    arch = ARCHS[cfg.model.arch]
    if arch.kind == "2d" or not arch.inputs:
        return
    finest = max(arch.inputs, key=lambda s: s.frames)
    frames, interval = cfg.sampling.frames or finest.frames, cfg.sampling.interval or finest.interval
    if (frames, interval) != (finest.frames, finest.interval):
        print(
            f"warning: sampling {frames}x{interval} differs from {cfg.model.arch}'s {finest.frames}x{finest.interval},"
            " which export/to_onnx.py writes into the model spec: the live agent would sample differently",
            flush=True,
        )


def export_command(cfg: TrainConfig, checkpoint: Path) -> str:
    """The export/to_onnx.py command line that gives the live agent this training's sampling and crop."""
    cmd = f"python export/to_onnx.py --arch {cfg.model.arch} --checkpoint {checkpoint} --size {cfg.model.size}"
    cmd += f" --fps {cfg.data.fps:g}"
    if cfg.model.modality == "flow":
        cmd += f" --flow-method {cfg.data.flow_method} --flow-bound {cfg.data.flow_bound:g}"
    if ARCHS[cfg.model.arch].kind == "2d":
        cmd += f" --segments {cfg.segments} --window-s <seconds the segments should span>"
    return cmd + " --out model.onnx"


def plot_curves(history: list[dict], path: Path) -> Path:
    """Loss (train, val) and accuracy (train top-1, val top-1/top-5/mean class) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    if "val_loss" in history[-1]:
        left.plot(epochs, [r.get("val_loss", np.nan) for r in history], "o-", label="val")
    left.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    left.legend()
    right.plot(epochs, [r["train_top1"] for r in history], "o-", label="train top-1 (augmented)")
    curves = (("val_top1", "val top-1"), ("val_top5", "val top-5"), ("val_mean_class_accuracy", "val mean class"))
    for key, name in curves:
        if key in history[-1]:
            right.plot(epochs, [r.get(key, np.nan) for r in history], "o-", label=name)
    right.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
