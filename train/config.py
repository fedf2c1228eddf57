"""The trainer's typed configuration: one pydantic model per concern, unknown keys rejected.

Load from YAML with :func:`load_config`, or build from a plain dict (``TrainConfig.model_validate``). Only
``data.train`` is required::

    data: {train: .cache/synth/train.txt, val: .cache/synth/val.txt, labels: .cache/synth/labels.txt}
    model: {arch: slowonly_r50_8x8, depth: 18, width: 8, size: 64}
    optim: {epochs: 10, batch_size: 8, lr: 0.05, schedule: cosine}
    augment: {flip_pairs: [[move_left, move_right], [rotate_cw, rotate_ccw]]}

Learning rate and batch size: MMAction2 configs state ``lr`` for their total batch (GPUs × videos per GPU); when you
change the batch, scale the learning rate linearly (``lr_new = lr × batch_new / batch_ref``, Goyal et al. 2017).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.errors import ConfigError
from agent.spec import FlowMethod
from export.models import ARCHS, FLOW_VARIANTS


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Base):
    train: Path = Field(description="training list file (MMAction2 format) or folder with one sub-folder per class")
    val: Path | None = Field(None, description="validation list file or folder; none: no validation")
    root: Path | None = Field(None, description="data root prefixed to list paths (default: each list's folder)")
    format: Literal["video", "rawframes"] = Field(
        "video", description="list format: '<path> <label>' or '<frame_dir> <num_frames> <label>'"
    )
    labels: Path | None = Field(
        None,
        description="class names, one per line, in label order (folders: "
        "the sorted folder names; otherwise '0', '1', ...)",
    )
    fps: float = Field(30.0, gt=0, description="frame rate of the videos: export's --fps (stride_s = interval / fps)")
    cache: bool = Field(
        False,
        description="keep decoded (resized) frames in memory after the first epoch; small "
        "sets only (the synthetic set: ~2 MB per clip); loading then runs in the main process",
    )
    flow_method: FlowMethod = Field(
        "tvl1", description="flow models: how each video's optical flow is made (tvl1, farneback: MMAction2's; dis)"
    )
    flow_bound: float = Field(20.0, gt=0, description="flow models: flow clipped to ±bound pixels, mapped to 0-255")
    flow_cache: Path | None = Field(
        None,
        description="flow models: where each video's flow is cached (default: <data root>/.flow); "
        "rawframes lists: MMAction2's x_/y_ flow frames are read instead",
    )


class ModelConfig(_Base):
    arch: str = Field("slowonly_r50_8x8", description=f"one of: {', '.join(ARCHS)}")
    modality: Literal["rgb", "flow"] | None = Field(
        None,
        description="what the model sees (default: the arch's); flow with an RGB arch trains its flow variant "
        f"({', '.join(f'{a} → {v}' for a, v in FLOW_VARIANTS.items())})",
    )
    depth: Literal[18, 34, 50, 101, 152] | None = Field(
        None, description="ResNet depth (default: the arch's, 50 for most; archs without one: none)"
    )
    width: int | None = Field(
        None, ge=1, description="base channels (default: the arch's: 64 in MMAction2's ResNets, 24 in X3D)"
    )
    dropout: float | None = Field(None, ge=0, lt=1, description="head dropout (default: the arch's)")
    size: int | None = Field(None, ge=32, description="square crop fed to the model, pixels (default: the arch's)")
    resize_short: int | None = Field(
        None, description="short side before cropping (default: the arch's test resize for this size, e.g. 256/224)"
    )

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        if v not in ARCHS:
            raise ValueError(f"unknown arch {v!r}; expected one of: {', '.join(ARCHS)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _arch_defaults(cls, data: Any) -> Any:
        """Depth, width and crop the arch's builder and config have, where not given (so they are stored)."""
        if not isinstance(data, dict) or data.get("arch", "slowonly_r50_8x8") not in ARCHS:
            return data
        data = dict(data)
        name = data.get("arch", "slowonly_r50_8x8")
        if data.get("modality") == "flow" and ARCHS[name].modality == "rgb":
            if name not in FLOW_VARIANTS:
                flows = ", ".join(a for a, arch in ARCHS.items() if arch.modality == "flow")
                raise ValueError(f"{name} has no flow variant; flow archs: {flows}")
            data["arch"] = name = FLOW_VARIANTS[name]
        if data.get("modality") == "rgb" and ARCHS[name].modality == "flow":
            raise ValueError(f"{name} takes optical flow, not RGB frames")
        data["modality"] = ARCHS[name].modality
        arch = ARCHS[name]
        defaults = {k: p.default for k, p in inspect.signature(arch.build).parameters.items()}
        for knob in ("depth", "width"):
            if data.get(knob) is None and knob in defaults:
                data[knob] = defaults[knob]
        if data.get("size") is None:
            data["size"] = arch.geometry().size
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        for knob in ("depth", "width"):
            if getattr(self, knob) is not None and not ARCHS[self.arch].takes(knob):
                raise ValueError(f"{self.arch} has no {knob} to set")
        if self.resize_short is not None and self.resize_short < self.size:
            raise ValueError(f"resize_short ({self.resize_short}) must be >= size ({self.size})")
        return self

    @property
    def short_side(self) -> int:
        return self.resize_short or ARCHS[self.arch].geometry(self.size).resize_short

    @property
    def resize_to(self) -> tuple[int, int] | None:
        """The arch's fixed (width, height) resize for this crop (S3D), unless ``resize_short`` is set."""
        return None if self.resize_short else ARCHS[self.arch].geometry(self.size).resize_to

    def model_args(self, num_classes: int) -> dict:
        args = {"num_classes": num_classes, "depth": self.depth, "width": self.width}
        args = {k: v for k, v in args.items() if v is not None}
        if ARCHS[self.arch].takes("size"):  # C3D: fc6 follows the crop
            args["size"] = self.size
        return args if self.dropout is None else {**args, "dropout": self.dropout}


class SamplingConfig(_Base):
    frames: int | None = Field(
        None,
        ge=1,
        description="3D: frames per clip (SlowFast: fast frames); default: the "
        "arch's, which is what export/to_onnx.py writes into the spec",
    )
    interval: int | None = Field(None, ge=1, description="3D: frame_interval; default: the arch's")
    segments: int | None = Field(
        None, ge=1, description="2D (TSN, TSM): segments, one frame each (default: the arch's, 8; tsm_r50_1x1x16: 16)"
    )
    test_clips: int = Field(1, ge=1, description="3D: clips per video at validation, scores averaged")
    repeats: int = Field(
        1,
        ge=1,
        description="training clips sampled from each decoded video per epoch "
        "(MMAction2's RepeatAugDataset; cuts decoding time per clip on CPUs)",
    )


class AugmentConfig(_Base):
    area_range: tuple[float, float] = Field((0.08, 1.0), description="RandomResizedCrop area fraction range")
    aspect_ratio_range: tuple[float, float] = Field((3 / 4, 4 / 3), description="RandomResizedCrop aspect range")
    flip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability")
    flip_pairs: list[tuple[str, str]] = Field(
        default_factory=list, description="label pairs a horizontal flip swaps, e.g. [move_left, move_right]"
    )

    @field_validator("area_range", "aspect_ratio_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"expected 0 < low <= high, got {list(v)}")
        return v


class OptimConfig(_Base):
    epochs: int = Field(20, ge=1, description="epochs to train (in total, also when resuming)")
    batch_size: int = Field(8, ge=1, description="videos per step")
    lr: float = Field(0.01, gt=0, description="peak learning rate (scale linearly with batch_size)")
    momentum: float = Field(0.9, ge=0, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0, description="SGD weight decay")
    schedule: Literal["step", "cosine"] = Field("cosine", description="learning-rate schedule")
    milestones: list[int] = Field(default_factory=list, description="step: epochs at which lr *= gamma")
    gamma: float = Field(0.1, gt=0, description="step: factor at each milestone")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from lr/10, in epochs (fractions ok)")
    clip_grad: float | None = Field(40.0, gt=0, description="max gradient L2 norm (MMAction2: 40); none: off")


class TrainConfig(_Base):
    data: DataConfig
    model: ModelConfig = ModelConfig()
    sampling: SamplingConfig = SamplingConfig()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    out_dir: Path = Field(Path("work_dirs/train"), description="checkpoints, plots and metrics.json go here")
    seed: int = Field(0, description="seeds weights, shuffling, sampling and augmentation")
    checkpoint_every: int = Field(1, ge=1, description="save a checkpoint every N epochs (and after the last)")
    load_from: Path | None = Field(
        None,
        description="initial weights: MMAction2 or actionstream checkpoint; the "
        "head is replaced when the class count differs",
    )
    resume: Path | None = Field(
        None, description="actionstream checkpoint to continue from (weights, optimizer, epoch, history)"
    )
    num_workers: int | None = Field(
        None,
        ge=0,
        description="DataLoader worker processes (0: load in the main process); default 1, or 0 with data.cache",
    )
    progress: bool = Field(True, description="tqdm progress bars")

    @model_validator(mode="after")
    def _cache_in_main_process(self) -> TrainConfig:
        if self.data.cache and self.num_workers:
            raise ValueError("data.cache keeps frames in the main process: set num_workers to 0 (or leave it unset)")
        return self

    @property
    def segments(self) -> int:
        """2D models' segments: the configured ones, else the arch's."""
        return self.sampling.segments or ARCHS[self.model.arch].segments

    def model_args(self, num_classes: int) -> dict:
        """What the model is built with (and checkpoints store): the model's knobs, and TSM's segment count."""
        args = self.model.model_args(num_classes)
        return args | {"segments": self.segments} if ARCHS[self.model.arch].takes("segments") else args

    @property
    def workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return 0 if self.data.cache else 1


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """YAML file (plus ``overrides``, merged key by key) → :class:`TrainConfig`; errors name file and key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return build_config(merge(raw, overrides or {}), source=str(path))


def build_config(raw: dict, source: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        lines = [f"{source}: invalid configuration"]
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {key}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


def merge(base: dict, overrides: dict) -> dict:
    """Recursive dict merge; ``overrides`` wins."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
