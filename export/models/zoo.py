"""The model zoo: one keyword-only builder per architecture, plus how each samples its input.

Defaults reproduce MMAction2 1.2.0's ``configs/_base_/models/*_r50.py``; ``depth`` (18/34/50/101) and ``width``
(base channels, 64 in MMAction2) make smaller models for tests and CPU training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from export.models.detection import ActionDetector, AVARoIHead
from export.models.heads import I3DHead, SlowFastHead, TSNHead
from export.models.recognizers import Recognizer2D, Recognizer3D, RecognizerSlowFast
from export.models.resnet2d import ResNet2d
from export.models.resnet3d import ResNet3d
from export.models.slowfast import SlowFast

AVA_SPATIAL_STRIDES = (1, 2, 2, 1)  # AVA detectors: the last stage keeps stride 16 for RoIAlign
I3D_R50_INFLATE = ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0))


def tsn_r50(*, num_classes: int = 400, depth: int = 50, width: int = 64, dropout: float = 0.4) -> Recognizer2D:
    backbone = ResNet2d(depth=depth, width=width)
    return Recognizer2D(backbone, TSNHead(backbone.out_channels, num_classes, dropout=dropout))


def i3d_r50(*, num_classes: int = 400, depth: int = 50, width: int = 64, dropout: float = 0.5) -> Recognizer3D:
    backbone = ResNet3d(
        depth=depth,
        width=width,
        conv1_kernel=(5, 7, 7),
        conv1_stride_t=2,
        pool1_stride_t=2,
        inflate=I3D_R50_INFLATE if depth == 50 else (1, 1, 1, 1),
    )
    return Recognizer3D(backbone, I3DHead(backbone.out_channels, num_classes, dropout=dropout))


def _slowonly(num_classes: int, depth: int, width: int, dropout: float) -> Recognizer3D:
    backbone = ResNet3d(depth=depth, width=width, conv1_kernel=(1, 7, 7), with_pool2=False, inflate=(0, 0, 1, 1))
    return Recognizer3D(backbone, I3DHead(backbone.out_channels, num_classes, dropout=dropout))


def slowonly_r50_4x16(
    *, num_classes: int = 400, depth: int = 50, width: int = 64, dropout: float = 0.5
) -> Recognizer3D:
    return _slowonly(num_classes, depth, width, dropout)


def slowonly_r50_8x8(*, num_classes: int = 400, depth: int = 50, width: int = 64, dropout: float = 0.5) -> Recognizer3D:
    return _slowonly(num_classes, depth, width, dropout)


def slowfast_r50_4x16(
    *, num_classes: int = 400, depth: int = 50, width: int = 64, dropout: float = 0.5
) -> RecognizerSlowFast:
    backbone = SlowFast(depth=depth, width=width, speed_ratio=8, fusion_kernel=5)
    return RecognizerSlowFast(backbone, SlowFastHead(backbone.out_channels, num_classes, dropout=dropout))


def slowfast_r50_8x8(
    *, num_classes: int = 400, depth: int = 50, width: int = 64, dropout: float = 0.5
) -> RecognizerSlowFast:
    backbone = SlowFast(depth=depth, width=width, speed_ratio=4, fusion_kernel=7)
    return RecognizerSlowFast(backbone, SlowFastHead(backbone.out_channels, num_classes, dropout=dropout))


def _ava_slowonly(num_classes: int, depth: int, width: int, dropout: float) -> ActionDetector:
    backbone = ResNet3d(
        depth=depth,
        width=width,
        conv1_kernel=(1, 7, 7),
        with_pool2=False,
        inflate=(0, 0, 1, 1),
        spatial_strides=AVA_SPATIAL_STRIDES,
    )
    return ActionDetector(backbone, AVARoIHead(backbone.out_channels, num_classes, dropout=dropout))


def ava_slowonly_r50_4x16(
    *, num_classes: int = 81, depth: int = 50, width: int = 64, dropout: float = 0.5
) -> ActionDetector:
    return _ava_slowonly(num_classes, depth, width, dropout)


def ava_slowonly_r50_8x8(
    *, num_classes: int = 81, depth: int = 50, width: int = 64, dropout: float = 0.5
) -> ActionDetector:
    return _ava_slowonly(num_classes, depth, width, dropout)


def ava_slowfast_r50_4x16(
    *, num_classes: int = 81, depth: int = 50, width: int = 64, dropout: float = 0.5
) -> ActionDetector:
    backbone = SlowFast(depth=depth, width=width, speed_ratio=8, fusion_kernel=5, spatial_strides=AVA_SPATIAL_STRIDES)
    return ActionDetector(backbone, AVARoIHead(backbone.out_channels, num_classes, dropout=dropout))


def ava_slowfast_r50_8x8(
    *, num_classes: int = 81, depth: int = 50, width: int = 64, dropout: float = 0.5
) -> ActionDetector:
    backbone = SlowFast(depth=depth, width=width, speed_ratio=4, fusion_kernel=7, spatial_strides=AVA_SPATIAL_STRIDES)
    return ActionDetector(backbone, AVARoIHead(backbone.out_channels, num_classes, dropout=dropout))


@dataclass(frozen=True)
class Sampling:
    """One model input: ``frames`` frames, ``interval`` source frames apart (MMAction2's ``frame_interval``)."""

    name: str
    frames: int
    interval: int


@dataclass(frozen=True)
class Arch:
    build: Callable[..., nn.Module]
    kind: Literal["2d", "3d", "slowfast"]
    inputs: tuple[Sampling, ...]  # empty for TSN: segments spread over a window chosen at export


ARCHS: dict[str, Arch] = {
    "tsn_r50": Arch(tsn_r50, "2d", ()),
    "i3d_r50": Arch(i3d_r50, "3d", (Sampling("clip", 32, 2),)),
    "slowonly_r50_4x16": Arch(slowonly_r50_4x16, "3d", (Sampling("clip", 4, 16),)),
    "slowonly_r50_8x8": Arch(slowonly_r50_8x8, "3d", (Sampling("clip", 8, 8),)),
    "slowfast_r50_4x16": Arch(slowfast_r50_4x16, "slowfast", (Sampling("slow", 4, 16), Sampling("fast", 32, 2))),
    "slowfast_r50_8x8": Arch(slowfast_r50_8x8, "slowfast", (Sampling("slow", 8, 8), Sampling("fast", 32, 2))),
}

# Person (AVA-style) models: clip(s) + person boxes -> per-box multi-label logits. Sampling as in MMAction2's AVA
# configs (``SampleAVAFrames``, 30 fps), the key frame being the clip's centre one (index frames // 2).
PERSON_ARCHS: dict[str, Arch] = {
    "ava_slowonly_r50_4x16": Arch(ava_slowonly_r50_4x16, "3d", (Sampling("clip", 4, 16),)),
    "ava_slowonly_r50_8x8": Arch(ava_slowonly_r50_8x8, "3d", (Sampling("clip", 8, 8),)),
    "ava_slowfast_r50_4x16": Arch(
        ava_slowfast_r50_4x16, "slowfast", (Sampling("slow", 4, 16), Sampling("fast", 32, 2))
    ),
    "ava_slowfast_r50_8x8": Arch(ava_slowfast_r50_8x8, "slowfast", (Sampling("slow", 8, 8), Sampling("fast", 32, 2))),
}


def build_model(arch: str, **kwargs: object) -> nn.Module:
    """Build ``arch`` (a clip or a person model) by name; unknown names list the known ones."""
    known = {**ARCHS, **PERSON_ARCHS}
    if arch not in known:
        raise ValueError(f"unknown arch {arch!r}; expected one of: {', '.join(known)}")
    return known[arch].build(**kwargs)
