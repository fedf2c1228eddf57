"""Checkpoint import: MMAction2 checkpoints and our own, with strict, readable key/shape checks.

Loading never executes code from the file: ``torch.load(..., weights_only=True)`` only. MMAction2/mmengine
checkpoints also pickle bookkeeping objects (``message_hub``, numpy scalars in ``meta``); those are rebuilt as
inert stand-ins (classes of ours that only store their arguments) and then discarded. Globals outside that
allow-list (``os.system``, ``builtins.eval``, ...) make the load fail with the global's name.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agent.errors import CheckpointError

OUR_FORMAT = "actionstream.checkpoint/1"
# Modules whose pickled objects may appear in a checkpoint's bookkeeping and are replaced by stand-ins.
BOOKKEEPING_MODULES = ("numpy", "mmengine", "mmcv", "mmaction", "collections", "_codecs", "argparse")
IGNORED_PREFIXES = ("data_preprocessor.",)
# The classifier: recognizers' ``cls_head``, AVA detectors' ``roi_head.bbox_head`` (MMAction2 key names).
HEAD_PREFIXES = ("cls_head.", "roi_head.bbox_head.")
# Its last layer, whose rows are the classes (``fc2``: X3D's head, after ``fc1``).
CLASSIFIER_KEYS = ("cls_head.fc_cls.weight", "cls_head.fc2.weight", "roi_head.bbox_head.fc_cls.weight")


@dataclass
class Checkpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]
    arch: str | None = None  # ours only
    model_args: dict[str, Any] = field(default_factory=dict)  # ours only
    labels: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int | None:
        return classes_of(self.state_dict)


def classes_of(state: dict[str, torch.Tensor]) -> int | None:
    """Rows of the classifier's weight in ``state`` (None without a known classifier key)."""
    for key in CLASSIFIER_KEYS:
        if (w := state.get(key)) is not None:
            return int(w.shape[0])
    return None


def _stand_in(qualified: str) -> type:
    module, _, name = qualified.rpartition(".")

    class StandIn:
        def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
            return object.__new__(cls)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.args = args

        def __setstate__(self, state: Any) -> None:
            self.state = state

    StandIn.__module__, StandIn.__name__, StandIn.__qualname__ = module, name, name
    return StandIn


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    refused = [g for g in unsafe if g.split(".")[0] not in BOOKKEEPING_MODULES]
    if refused:
        raise CheckpointError(
            f"{path}: refusing to load: the pickle references {', '.join(refused)}, which could run code "
            "(only tensors and MMAction2/mmengine bookkeeping are accepted)"
        )
    with torch.serialization.safe_globals([(_stand_in(g), g) for g in unsafe]):
        return torch.load(path, map_location="cpu", weights_only=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read an MMAction2 (``state_dict`` [+ ``meta``]) or actionstream checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = _torch_load(path)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    if obj.get("format") == OUR_FORMAT:
        return Checkpoint(
            path,
            _tensors(obj["state_dict"], path),
            arch=obj["arch"],
            model_args=dict(obj.get("model_args", {})),
            labels=list(obj["labels"]) if obj.get("labels") else None,
            extra={k: v for k, v in obj.items() if k not in ("format", "state_dict", "arch", "model_args", "labels")},
        )
    state = obj.get("state_dict", obj)
    labels = None
    meta = obj.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("dataset_meta"), dict):
        classes = meta["dataset_meta"].get("classes")
        labels = [str(c) for c in classes] if isinstance(classes, (list, tuple)) else None
    return Checkpoint(path, _tensors(state, path), labels=labels)


def _tensors(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(state).__name__}, expected a dict of tensors")
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(IGNORED_PREFIXES):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: key {key!r} holds a {type(value).__name__}, expected a tensor")
        out[key] = value
    return out


def load_weights(model: nn.Module, ckpt: Checkpoint, *, reset_head: bool = False) -> None:
    """Load strictly; with ``reset_head`` the checkpoint's head (``cls_head.*``, ``roi_head.bbox_head.*``) is
    dropped (fine-tuning recipe). A model with an ``adapt_state_dict`` method (S3D) first renames foreign keys
    (torchvision's) to its own."""
    state = dict(ckpt.state_dict)
    if (adapt := getattr(model, "adapt_state_dict", None)) is not None:
        state = adapt(state)
    own = model.state_dict()
    if reset_head:
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
        own = {k: v for k, v in own.items() if not k.startswith(HEAD_PREFIXES)}
    else:
        theirs, ours = classes_of(state), classes_of(own)
        if theirs is not None and theirs != ours:
            raise CheckpointError(
                f"{ckpt.path}: checkpoint has {theirs} classes (fc_cls.weight) but the model has {ours}; "
                "pass --reset-head to replace the head with a new random one"
            )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f"{ckpt.path}: checkpoint does not fit the model"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatch", mismatched),
        ):
            if items:
                shown = items[:10] + ([f"... and {len(items) - 10} more"] if len(items) > 10 else [])
                lines.append(f"  {title} ({len(items)}): " + ", ".join(shown))
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=not reset_head)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    model_args: dict[str, Any],
    labels: list[str] | None = None,
    **extra: Any,
) -> None:
    """Write our format: weights plus everything needed to rebuild the model without the training script."""
    payload = {
        "format": OUR_FORMAT,
        "arch": arch,
        "model_args": model_args,
        "labels": labels,
        "state_dict": model.state_dict(),
        **extra,
    }
    torch.save(payload, Path(path))
