"""Clip pipelines with MMAction2's numerics: which frames (SampleFrames), then crop/flip/normalise/format.

Training (MMAction2's train pipelines)::

    SampleFrames(clip_len, frame_interval, num_clips)   random offsets
    Resize(-1, resize_short) → RandomResizedCrop → Resize(size, size) → Flip(flip_ratio) → Normalize → format

Validation / test::

    SampleFrames(..., test_mode=True)                   fixed, centred offsets
    Resize(-1, resize_short) → CenterCrop(size) → Normalize → format

``resize_short`` defaults to the arch's test resize for the crop (``size * 256 / 224`` for most: MMAction2's
256 → 224) and is what the exported model's spec tells the live agent, so validation sees exactly what the agent
will feed the model; S3D's frames are resized to a fixed ``resize_to`` (width, height) instead, as torchvision's.
Mean and std are the arch's (C3D's and X3D's differ from ImageNet's). Videos are resized by swscale while
decoding (the agent's path); raw frames are resized here.

TSN (2D) samples ``segments`` frames, one per segment (``clip_len=1, num_clips=segments``); 3D models sample
``num_clips`` clips ("views") of ``clip_len`` frames ``frame_interval`` apart, whose scores are averaged at test
time; SlowFast samples its fast pathway and takes every ``alpha``-th frame for the slow one.

Flow models (MMAction2's flow configs) take uint8 flow fields ``[T, H, W, 2]`` (x, y; 128 = still) instead of RGB
frames, sampled from a video's flow (:mod:`train.flows`) the same way: TSN on flow takes ``pairs`` consecutive
fields per segment (``clip_len=pairs, num_clips=segments``) and stacks them into ``2·pairs`` channels, x and y
interleaved (MMAction2's ``FormatShape``); SlowOnly on flow samples fields as frames. Crops and resizes treat the
fields as images; a horizontal flip mirrors them and negates their x component (``255 - x``), which is what
MMAction2's ``Flow`` flip means to do (its 1.2.0 ``Flip`` inverts every other stacked field whole instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from agent.errors import ConfigError
from agent.spec import IMAGENET_MEAN, IMAGENET_STD, resized_size
from export.models import ARCHS
from train.config import TrainConfig

Kind = Literal["2d", "3d", "slowfast"]


# --- which frames -----------------------------------------------------------------------------------------------


def clip_offsets(
    total_frames: int,
    *,
    clip_len: int,
    frame_interval: int = 1,
    num_clips: int = 1,
    test_mode: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """First frame of each clip, as MMAction2's ``SampleFrames`` (without ``keep_tail_frames``/``target_fps``).

    Train: the video is cut into ``num_clips`` equal strides of ``avg = (total - clip_len·interval + 1) //
    num_clips`` frames and each clip starts at a random offset in its stride; videos too short for that start
    clips at sorted random offsets, or spread evenly, or all at 0. Test: 2D (``clip_len == 1``) takes the middle
    of each of ``num_clips`` equal segments (fractional; truncated later); 3D spreads clips evenly over
    ``total - span`` (one clip: centred, ``max_offset // 2``) with ``span = (clip_len - 1)·interval + 1``.
    """
    if test_mode:
        if clip_len == 1:
            avg = total_frames / float(num_clips)
            return np.arange(num_clips) * avg + avg / 2.0
        max_offset = max(total_frames - ((clip_len - 1) * frame_interval + 1), 0)
        if num_clips > 1:
            return np.round(np.arange(num_clips) * (max_offset / float(num_clips - 1)))
        return np.array([max_offset // 2])
    if rng is None:
        raise ValueError("train-mode sampling needs a random generator (rng)")
    span = clip_len * frame_interval
    avg = (total_frames - span + 1) // num_clips
    if avg > 0:
        return np.arange(num_clips) * avg + rng.integers(avg, size=num_clips)
    if total_frames > max(num_clips, span):
        return np.sort(rng.integers(total_frames - span + 1, size=num_clips))
    if avg == 0:
        return np.around(np.arange(num_clips) * ((total_frames - span + 1.0) / num_clips))
    return np.zeros(num_clips, dtype=np.int64)


def sample_frames(
    total_frames: int,
    *,
    clip_len: int,
    frame_interval: int = 1,
    num_clips: int = 1,
    test_mode: bool = False,
    rng: np.random.Generator | None = None,
    start_index: int = 0,
) -> np.ndarray:
    """Frame indices ``[num_clips * clip_len]`` (int64), out-of-range ones wrapped (MMAction2's ``loop``).

    ``start_index`` is added at the end (1 for MMAction2's raw frames; our readers take 0-based indices)."""
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    offsets = clip_offsets(
        total_frames,
        clip_len=clip_len,
        frame_interval=frame_interval,
        num_clips=num_clips,
        test_mode=test_mode,
        rng=rng,
    )
    indices = offsets[:, None] + np.arange(clip_len)[None, :] * frame_interval
    return (np.mod(indices, total_frames) + start_index).astype(np.int64).reshape(-1)


def tsn_segments(
    total_frames: int, segments: int, *, test_mode: bool = False, rng: np.random.Generator | None = None
) -> np.ndarray:
    """TSN sampling: one frame from each of ``segments`` equal segments (random in train, middle in test)."""
    return sample_frames(total_frames, clip_len=1, num_clips=segments, test_mode=test_mode, rng=rng)


# --- pixels -----------------------------------------------------------------------------------------------------


def resize_short_side(frames: torch.Tensor, short_side: int, resize_to: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 ``[T, 3, H, W]`` with the short side scaled to ``short_side`` (bilinear); or to exactly ``resize_to``
    (width, height) when given."""
    h, w = frames.shape[-2:]
    new_w, new_h = resize_to or resized_size(w, h, short_side)
    if (new_h, new_w) == (h, w):
        return frames
    return TF.resize(frames, [new_h, new_w], antialias=True)


def random_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
    max_attempts: int = 10,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) as MMAction2's ``RandomResizedCrop``: ``max_attempts`` (area, log-uniform aspect)
    candidates, the first that fits wins; otherwise the centred square of the short side."""
    ratios = np.exp(rng.uniform(np.log(aspect_ratio_range[0]), np.log(aspect_ratio_range[1]), size=max_attempts))
    areas = rng.uniform(*area_range, size=max_attempts) * height * width
    crop_ws = np.round(np.sqrt(areas * ratios)).astype(np.int64)
    crop_hs = np.round(np.sqrt(areas / ratios)).astype(np.int64)
    for crop_h, crop_w in zip(crop_hs, crop_ws, strict=True):
        if crop_h <= height and crop_w <= width:
            left = int(rng.integers(0, width - crop_w + 1))
            top = int(rng.integers(0, height - crop_h + 1))
            return top, left, int(crop_h), int(crop_w)
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def centre_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """``[..., H, W]`` → ``[..., size, size]``; origin ``((W - size) // 2, (H - size) // 2)`` as MMAction2."""
    h, w = frames.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot centre-crop {size}x{size} from {w}x{h} frames")
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top : top + size, left : left + size]


def normalize(frames: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 ``[..., C, H, W]`` (RGB; flow: x, y) → float32 ``(x - mean) / std``, one mean and std per channel."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (frames.float() - m) / s


def format_inputs(x: torch.Tensor, kind: Kind, alpha: int = 1, pairs: int = 1) -> tuple[torch.Tensor, ...]:
    """``[V, T, C, H, W]`` → the model's inputs, each with the leading views dimension ``V``:
    2D ``([V, T, C, H, W],)`` (on flow with ``pairs`` > 1: ``[V, T/pairs, pairs·C, H, W]``); 3D ``([V, C, T, H, W],)``;
    SlowFast ``(slow [V, C, T/α, H, W], fast [V, C, T, H, W])`` with ``slow = fast[:, :, ::α]``."""
    if kind == "2d":
        return (x.unflatten(1, (-1, pairs)).flatten(2, 3) if pairs > 1 else x,)
    ncthw = x.permute(0, 2, 1, 3, 4).contiguous()
    if kind == "3d":
        return (ncthw,)
    return (ncthw[:, :, ::alpha].contiguous(), ncthw)


# --- the whole pipeline -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipPipeline:
    """Frame choice and pixel processing for one model kind, in train or test mode.

    ``num_clips`` is the number of views for 3D/SlowFast (scores averaged) and the number of segments for 2D.
    ``flip_label_map`` maps a label to its mirror image's label (e.g. move_left ↔ move_right); MMAction2's
    ``Flip(flip_label_map=...)``."""

    kind: Kind
    clip_len: int
    frame_interval: int
    num_clips: int
    size: int
    resize_short: int
    test_mode: bool
    alpha: int = 1
    resize_to: tuple[int, int] | None = None  # (width, height) instead of the short side (S3D)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    modality: Literal["rgb", "flow"] = "rgb"
    pairs: int = 1  # 2D on flow: fields stacked per segment (= clip_len)
    area_range: tuple[float, float] = (0.08, 1.0)
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)
    flip_ratio: float = 0.5
    flip_label_map: dict[int, int] = field(default_factory=dict)

    @property
    def views(self) -> int:
        return 1 if self.kind == "2d" else self.num_clips

    @property
    def channels(self) -> int:
        return 2 if self.modality == "flow" else 3

    def frame_indices(self, total_frames: int, rng: np.random.Generator) -> np.ndarray:
        return sample_frames(
            total_frames,
            clip_len=self.clip_len,
            frame_interval=self.frame_interval,
            num_clips=self.num_clips,
            test_mode=self.test_mode,
            rng=rng,
        )

    def __call__(
        self, frames: np.ndarray, label: int, rng: np.random.Generator
    ) -> tuple[tuple[torch.Tensor, ...], int]:
        """uint8 RGB ``[views·T, H, W, 3]`` (flow: ``[views·T, H, W, 2]``) as sampled → (model inputs, label after
        any flip)."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # T C H W
        x = resize_short_side(x, self.resize_short, self.resize_to)
        x = x.reshape(self.views, -1, *x.shape[1:])  # V T 3 H W
        if self.test_mode:
            x = centre_crop(x, self.size)
        else:
            x, label = self._augment(x, label, rng)
        return format_inputs(normalize(x, self.mean, self.std), self.kind, self.alpha, self.pairs), label

    def _augment(self, x: torch.Tensor, label: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        h, w = x.shape[-2:]
        views = []
        for view in x:  # one crop for all frames of a view
            top, left, ch, cw = random_crop_box(h, w, rng, self.area_range, self.aspect_ratio_range)
            views.append(TF.resized_crop(view, top, left, ch, cw, [self.size, self.size], antialias=True))
        x = torch.stack(views)
        if rng.random() < self.flip_ratio:
            x = x.flip(-1)
            if self.modality == "flow":  # mirrored motion: x displacements change sign (128 ± d → 127 ∓ d)
                x[:, :, 0] = 255 - x[:, :, 0]
            label = self.flip_label_map.get(label, label)
        return x, label


def pipeline_for(cfg: TrainConfig, labels: list[str], *, test_mode: bool) -> ClipPipeline:
    """The train or test pipeline a :class:`~train.config.TrainConfig` describes (sampling defaults: the arch's)."""
    arch = ARCHS[cfg.model.arch]
    if arch.kind == "2d":  # on flow: each segment's consecutive fields (MMAction2's 5x1x3: clip_len 5)
        clip_len, interval, num_clips, alpha = arch.pairs, 1, cfg.segments, 1
    else:
        finest = max(arch.inputs, key=lambda s: s.frames)
        alpha = finest.frames // min(s.frames for s in arch.inputs)
        clip_len = cfg.sampling.frames or finest.frames
        interval = cfg.sampling.interval or finest.interval
        num_clips = cfg.sampling.test_clips if test_mode else 1
        if clip_len % alpha:
            raise ConfigError(f"sampling.frames: {cfg.model.arch} needs a multiple of {alpha}, got {clip_len}")
    index = {name: i for i, name in enumerate(labels)}
    flip_map = {}
    for a, b in cfg.augment.flip_pairs:
        for name in (a, b):
            if name not in index:
                raise ConfigError(f"augment.flip_pairs: unknown label {name!r}; labels are: {', '.join(labels)}")
        flip_map[index[a]], flip_map[index[b]] = index[b], index[a]
    return ClipPipeline(
        kind=arch.kind,
        clip_len=clip_len,
        frame_interval=interval,
        num_clips=num_clips,
        size=cfg.model.size,
        resize_short=cfg.model.short_side,
        test_mode=test_mode,
        alpha=alpha,
        resize_to=cfg.model.resize_to,
        mean=arch.mean,
        std=arch.std,
        modality=arch.modality,
        pairs=arch.pairs if arch.kind == "2d" else 1,
        area_range=cfg.augment.area_range,
        aspect_ratio_range=cfg.augment.aspect_ratio_range,
        flip_ratio=cfg.augment.flip,
        flip_label_map=flip_map,
    )
