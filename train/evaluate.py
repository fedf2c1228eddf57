"""Scores and metrics: top-1, top-5, mean class accuracy (MMAction2's definitions), confusion matrix.

:func:`evaluate` runs a checkpoint written by the trainer over a list file or class folders with the trainer's
validation pipeline, so it reproduces the trainer's last validation numbers exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from agent.errors import CheckpointError, ConfigError
from export.checkpoints import load_weights, read_checkpoint
from export.models import build_model
from train.config import TrainConfig, merge
from train.datasets import ClipDataset, check_labels, load_samples
from train.pipelines import pipeline_for


@dataclass
class Metrics:
    top1: float
    top5: float
    mean_class_accuracy: float
    per_class: list[float | None]  # recall per class; None where the class has no samples
    confusion: np.ndarray  # [true, predicted] counts over all classes
    loss: float  # mean negative log of the (view-averaged) probability of the true class
    count: int

    def summary(self) -> dict[str, float]:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "mean_class_accuracy": self.mean_class_accuracy,
            "loss": self.loss,
        }


def compute_metrics(probs: np.ndarray, labels: np.ndarray) -> Metrics:
    """``probs`` ``[N, K]``, ``labels`` ``[N]``. Top-k as MMAction2's ``top_k_accuracy`` (k capped at K); mean class
    accuracy as its ``mean_class_accuracy``: the mean recall over the classes that occur in the labels *or* the
    predictions (a predicted class with no samples counts 0)."""
    n, k = probs.shape
    labels = labels.astype(np.int64)
    order = np.argsort(probs, axis=1)[:, ::-1]
    top = {kk: float((order[:, :kk] == labels[:, None]).any(axis=1).mean()) for kk in (1, min(5, k))}
    pred = order[:, 0]
    confusion = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    counts, hits = confusion.sum(axis=1), np.diag(confusion)
    occurring = np.union1d(labels, pred)
    mean_class = float(np.mean([hits[c] / counts[c] if counts[c] else 0.0 for c in occurring]))
    per_class = [float(hits[c] / counts[c]) if counts[c] else None for c in range(k)]
    loss = float(-np.log(np.clip(probs[np.arange(n), labels], 1e-12, None)).mean())
    return Metrics(top[1], top[min(5, k)], mean_class, per_class, confusion, loss, n)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, *, progress: bool = False, desc: str = "eval") -> tuple:
    """(probabilities ``[N, K]`` averaged over each video's views, labels ``[N]``) in loader order."""
    model.eval()
    all_probs, all_labels = [], []
    for inputs, labels in tqdm(loader, desc=desc, disable=not progress, leave=False):
        batch, views = inputs[0].shape[:2]
        logits = model(*(x.flatten(0, 1) for x in inputs))
        all_probs.append(logits.softmax(dim=1).view(batch, views, -1).mean(dim=1))
        all_labels.append(labels.view(batch, -1)[:, 0])
    return torch.cat(all_probs).numpy(), torch.cat(all_labels).numpy()


def plot_confusion(confusion: np.ndarray, labels: list[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true × predicted) with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(labels)
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=float), where=rows > 0)
    side = max(4.0, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, str(confusion[i, j]), ha="center", va="center", color=colour, fontsize=8)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def group_accuracy(metrics: Metrics, labels: list[str]) -> dict[str, float]:
    """Top-1 per group of the synthetic motion set (translation, rotation, scale, still) over the videos of the
    group's classes; empty when the labels are not the synthetic set's."""
    from agent.demo.synthetic import GROUPS

    index = {label: i for i, label in enumerate(labels)}
    if not set(labels) <= {c for group in GROUPS.values() for c in group}:
        return {}
    out = {}
    for group, classes in GROUPS.items():
        rows = [index[c] for c in classes if c in index]
        total = int(metrics.confusion[rows].sum()) if rows else 0
        if total:
            out[group] = float(sum(metrics.confusion[r, r] for r in rows) / total)
    return out


def format_report(metrics: Metrics, labels: list[str], *, per_class: bool = True) -> str:
    lines = [
        f"top-1 {metrics.top1:.4f}  top-5 {metrics.top5:.4f}  mean class accuracy {metrics.mean_class_accuracy:.4f}"
        f"  ({metrics.count} videos)"
    ]
    groups = group_accuracy(metrics, labels)
    if groups:
        lines.append("  groups: " + "  ".join(f"{g} {acc:.3f}" for g, acc in groups.items()))
    if not per_class:
        return "\n".join(lines)
    width = max(len(x) for x in labels)
    for name, acc, n in zip(labels, metrics.per_class, metrics.confusion.sum(axis=1), strict=True):
        lines.append(f"  {name:<{width}}  {'-' if acc is None else f'{acc:.3f}'}  (n={n})")
    return "\n".join(lines)


def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    *,
    root: str | Path | None = None,
    fmt: str | None = None,
    batch_size: int | None = None,
    test_clips: int | None = None,
    num_workers: int = 0,
    progress: bool = False,
    confusion_png: str | Path | None = None,
    flow_method: str | None = None,
) -> tuple[Metrics, list[str]]:
    """Evaluate a trainer checkpoint on ``data`` (list file or class folders) with its validation pipeline
    (``flow_method``: a flow model fed flow made another way than it was trained on, e.g. ``dis``)."""
    metrics, labels, _ = evaluate_probs(
        checkpoint,
        data,
        root=root,
        fmt=fmt,
        batch_size=batch_size,
        test_clips=test_clips,
        num_workers=num_workers,
        progress=progress,
        flow_method=flow_method,
    )
    if confusion_png is not None:
        plot_confusion(metrics.confusion, labels, confusion_png, title=f"{Path(checkpoint).name} on {Path(data).name}")
    return metrics, labels


def evaluate_fused(
    checkpoints: list[str | Path],
    weights: list[float],
    data: str | Path,
    *,
    confusion_png: str | Path | None = None,
    **options,
) -> tuple[Metrics, list[str], list[Metrics]]:
    """Each checkpoint on ``data`` (its own validation pipeline: RGB frames or flow), then their probabilities fused
    as the agent fuses a camera's models (:class:`agent.fusion.Fusion`: a weighted average, the first checkpoint's
    label order). Returns the fused metrics, the labels and each checkpoint's own metrics."""
    from agent.fusion import Fusion

    runs = [evaluate_probs(path, data, **options) for path in checkpoints]
    names = [f"{i}:{Path(p).name}" for i, p in enumerate(checkpoints)]
    fusion = Fusion(dict(zip(names, weights, strict=True)), {n: r[1] for n, r in zip(names, runs, strict=True)})
    truth = runs[0][2][1]
    for name, run in zip(names[1:], runs[1:], strict=True):  # the same videos in the same order, or fusing is wrong
        if not np.array_equal(run[2][1], truth):
            raise ConfigError(f"fusion: {name} saw other videos or labels than {names[0]}")
    fused_probs = fusion({n: r[2][0] for n, r in zip(names, runs, strict=True)})
    fused = compute_metrics(fused_probs, truth)  # the first checkpoint's label order is the fused one
    if confusion_png is not None:
        plot_confusion(fused.confusion, fusion.labels, confusion_png, title=f"fused on {Path(data).name}")
    return fused, fusion.labels, [r[0] for r in runs]


def evaluate_probs(
    checkpoint: str | Path,
    data: str | Path,
    *,
    root: str | Path | None = None,
    fmt: str | None = None,
    batch_size: int | None = None,
    test_clips: int | None = None,
    num_workers: int = 0,
    progress: bool = False,
    flow_method: str | None = None,
) -> tuple[Metrics, list[str], tuple[np.ndarray, np.ndarray]]:
    """:func:`evaluate`'s metrics and labels, and the probabilities and true labels they come from."""
    from train.trainer import flow_cache, prepare_flow

    ckpt = read_checkpoint(checkpoint)
    if ckpt.arch is None or "config" not in ckpt.extra:
        raise CheckpointError(
            f"{ckpt.path}: not written by the actionstream trainer (no arch/config to rebuild "
            "the model and its validation pipeline)"
        )
    saved = ckpt.extra["config"]
    overrides = {"data": {"train": str(data), "val": str(data)}, "sampling": {}, "optim": {}}
    if root is not None:
        overrides["data"]["root"] = str(root)
    if fmt is not None:
        overrides["data"]["format"] = fmt
    if test_clips is not None:
        overrides["sampling"]["test_clips"] = test_clips
    if batch_size is not None:
        overrides["optim"]["batch_size"] = batch_size
    if flow_method is not None:
        overrides["data"]["flow_method"] = flow_method
    try:
        cfg = TrainConfig.model_validate(merge(saved, overrides))
    except ValueError as e:
        raise ConfigError(f"{ckpt.path}: stored config does not validate ({e})") from None
    samples, _ = load_samples(cfg.data.val, root=cfg.data.root, fmt=cfg.data.format)
    labels = ckpt.labels or [str(i) for i in range(ckpt.num_classes or 0)]
    check_labels(samples, len(labels), data)
    model = build_model(ckpt.arch, **ckpt.model_args)
    load_weights(model, ckpt)
    flow = flow_cache(cfg)
    prepare_flow(cfg.model_copy(update={"progress": progress}), flow, samples)
    dataset = ClipDataset(samples, pipeline_for(cfg, labels, test_mode=True), seed=cfg.seed, flow=flow)
    loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, num_workers=num_workers)
    probs, truth = predict(model, loader, progress=progress)
    return compute_metrics(probs, truth), labels, (probs, truth)
