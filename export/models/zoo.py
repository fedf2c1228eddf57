"""The model zoo: one keyword-only builder per architecture, plus how each samples its input.

Defaults reproduce MMAction2 1.2.0's configs (``configs/_base_/models/*.py`` and the recognition configs each arch
is named after; S3D: torchvision's ``s3d``); ``depth`` (18/34/50/101/152, where the family has it) and ``width``
(base channels: 64 in MMAction2's ResNets, 24 in X3D) make smaller models for tests and CPU training. Builders of
models whose shape depends on their input also take it: ``segments`` (TSM), ``size`` (C3D's ``fc6``), ``pairs``
(TSN on flow: its first convolution takes 2 channels per stacked flow field). Flow models (``*_flow``) are the RGB
networks with MMAction2's flow configs' ``in_channels``; their ``Arch`` says how the flow is made.
docs/models.md describes every arch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

from torch import nn

from agent.spec import FLOW_MEAN, FLOW_STD, IMAGENET_MEAN, IMAGENET_STD, FlowMethod, Modality
from export.models.c3d import C3D
from export.models.csn import IPCSNBottleneck3d, IRCSNBottleneck3d
from export.models.detection import ActionDetector, AVARoIHead
from export.models.heads import FlatHead, I3DHead, SlowFastHead, TSMHead, TSNHead, X3DHead
from export.models.layers import conv2plus1d_bn, conv3d_bn
from export.models.recognizers import Recognizer2D, Recognizer3D, RecognizerSlowFast, RecognizerTSM
from export.models.resnet2d import ResNet2d
from export.models.resnet3d import Block, ResNet3d
from export.models.s3d import S3D, RecognizerS3D, S3DHead
from export.models.slowfast import SlowFast
from export.models.tsm import MobileNetV2TSM, ResNetTSM
from export.models.x3d import X3D

AVA_SPATIAL_STRIDES = (1, 2, 2, 1)  # AVA detectors: the last stage keeps stride 16 for RoIAlign
I3D_R50_INFLATE = ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0))


def tsn_r50(*, num_classes: int = 400, depth: int = 50, width: int = 64, dropout: float = 0.4) -> Recognizer2D:
    backbone = ResNet2d(depth=depth, width=width)
    return Recognizer2D(backbone, TSNHead(backbone.out_channels, num_classes, dropout=dropout))


def tsn_r50_flow(
    *, num_classes: int = 400, depth: int = 50, width: int = 64, pairs: int = 5, dropout: float = 0.4
) -> Recognizer2D:
    """TSN on stacked optical flow: each segment's ``pairs`` flow fields (x, y interleaved) as 2·pairs channels."""
    backbone = ResNet2d(depth=depth, width=width, in_channels=2 * pairs)
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


def slowonly_r50_flow(
    *, num_classes: int = 400, depth: int = 50, width: int = 64, dropout: float = 0.5
) -> Recognizer3D:
    """SlowOnly on optical flow: 2 channels (x, y) per frame."""
    backbone = ResNet3d(
        depth=depth, width=width, conv1_kernel=(1, 7, 7), with_pool2=False, inflate=(0, 0, 1, 1), in_channels=2
    )
    return Recognizer3D(backbone, I3DHead(backbone.out_channels, num_classes, dropout=dropout))


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


def c3d_sports1m(*, num_classes: int = 101, width: int = 64, size: int = 112, dropout: float = 0.5) -> Recognizer3D:
    backbone = C3D(width=width, frames=16, size=size)
    return Recognizer3D(backbone, FlatHead(backbone.out_channels, num_classes, dropout=dropout))


def _r2plus1d(num_classes: int, depth: int, width: int, dropout: float) -> Recognizer3D:
    backbone = ResNet3d(
        depth=depth,
        width=width,
        with_pool2=False,
        temporal_strides=(1, 2, 2, 2),
        conv=partial(conv2plus1d_bn, eps=1e-3),
    )
    return Recognizer3D(backbone, I3DHead(backbone.out_channels, num_classes, dropout=dropout))


def r2plus1d_r34_8x8(*, num_classes: int = 400, depth: int = 34, width: int = 64, dropout: float = 0.5) -> Recognizer3D:
    return _r2plus1d(num_classes, depth, width, dropout)


def r2plus1d_r34_32x2(
    *, num_classes: int = 400, depth: int = 34, width: int = 64, dropout: float = 0.5
) -> Recognizer3D:
    return _r2plus1d(num_classes, depth, width, dropout)


def _csn(block: Block, num_classes: int, depth: int, width: int, dropout: float) -> Recognizer3D:
    backbone = ResNet3d(
        depth=depth,
        width=width,
        with_pool2=False,
        temporal_strides=(1, 2, 2, 2),
        block=block,
        conv=partial(conv3d_bn, eps=1e-3),
    )
    return Recognizer3D(backbone, I3DHead(backbone.out_channels, num_classes, dropout=dropout))


def ircsn_r152(*, num_classes: int = 400, depth: int = 152, width: int = 64, dropout: float = 0.5) -> Recognizer3D:
    return _csn(IRCSNBottleneck3d, num_classes, depth, width, dropout)


def ipcsn_r152(*, num_classes: int = 400, depth: int = 152, width: int = 64, dropout: float = 0.5) -> Recognizer3D:
    return _csn(IPCSNBottleneck3d, num_classes, depth, width, dropout)


def tsm_r50_1x1x8(
    *, num_classes: int = 400, depth: int = 50, width: int = 64, segments: int = 8, dropout: float = 0.5
) -> RecognizerTSM:
    backbone = ResNetTSM(depth=depth, width=width, segments=segments)
    return RecognizerTSM(backbone, TSMHead(backbone.out_channels, num_classes, dropout=dropout))


def tsm_r50_1x1x16(
    *, num_classes: int = 400, depth: int = 50, width: int = 64, segments: int = 16, dropout: float = 0.5
) -> RecognizerTSM:
    return tsm_r50_1x1x8(num_classes=num_classes, depth=depth, width=width, segments=segments, dropout=dropout)


def tsm_mobilenetv2_1x1x8(*, num_classes: int = 400, segments: int = 8, dropout: float = 0.5) -> RecognizerTSM:
    backbone = MobileNetV2TSM(segments=segments)
    return RecognizerTSM(backbone, TSMHead(backbone.out_channels, num_classes, dropout=dropout))


def _x3d(num_classes: int, width: int, dropout: float) -> Recognizer3D:
    backbone = X3D(width=width, gamma_b=2.25, gamma_d=2.2)
    return Recognizer3D(backbone, X3DHead(backbone.out_channels, num_classes, dropout=dropout))


def x3d_s_13x6x1(*, num_classes: int = 400, width: int = 24, dropout: float = 0.5) -> Recognizer3D:
    return _x3d(num_classes, width, dropout)


def x3d_m_16x5x1(*, num_classes: int = 400, width: int = 24, dropout: float = 0.5) -> Recognizer3D:
    return _x3d(num_classes, width, dropout)


def s3d(*, num_classes: int = 400, width: int = 64, dropout: float = 0.2) -> RecognizerS3D:
    backbone = S3D(width=width)
    return RecognizerS3D(backbone, S3DHead(backbone.out_channels, num_classes, dropout=dropout))


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
class Geometry:
    """How frames become the model's: resize (the short side to ``resize_short``, or to exactly ``resize_to`` =
    (width, height) when set), then the centre ``size`` x ``size`` crop."""

    size: int
    resize_short: int
    resize_to: tuple[int, int] | None = None


@dataclass(frozen=True)
class Arch:
    build: Callable[..., nn.Module]
    kind: Literal["2d", "3d", "slowfast"]
    inputs: tuple[Sampling, ...]  # empty for 2D models: segments spread over a window chosen at export
    segments: int = 8  # 2D models: segments by default (TSM: what the config builds its backbone for)
    test: Geometry = Geometry(224, 256)  # the crop the config tests with
    mean: tuple[float, ...] = IMAGENET_MEAN  # on 0-255 RGB (flow: x, y), as MMAction2's data_preprocessor
    std: tuple[float, ...] = IMAGENET_STD
    modality: Modality = "rgb"
    pairs: int = 1  # flow: consecutive flow fields per sampled instant (MMAction2's clip_len for TSN on flow)
    flow_method: FlowMethod = "tvl1"  # flow: how the training data's flow was made (MMAction2's default)
    flow_bound: float = 20.0  # flow: ±pixels mapped to 0-255 (MMAction2's default)

    def takes(self, name: str) -> bool:
        """Whether the builder has the keyword ``name`` (``depth``, ``width``, ``segments``, ``size``)."""
        return name in inspect.signature(self.build).parameters

    def geometry(self, size: int | None = None) -> Geometry:
        """The test geometry for a crop of ``size`` (default: the config's), resize scaled in proportion."""
        if size is None or size == self.test.size:
            return self.test
        scale = size / self.test.size
        resize_to = self.test.resize_to and (
            round(self.test.resize_to[0] * scale),
            round(self.test.resize_to[1] * scale),
        )
        return Geometry(size, round(self.test.resize_short * scale), resize_to)


X3D_MEAN, X3D_STD = (114.75, 114.75, 114.75), (57.38, 57.38, 57.38)
# torchvision's video presets normalise 0-1 RGB: the same operation on 0-255
S3D_MEAN = (255 * 0.43216, 255 * 0.394666, 255 * 0.37645)
S3D_STD = (255 * 0.22803, 255 * 0.22145, 255 * 0.216989)

ARCHS: dict[str, Arch] = {
    "tsn_r50": Arch(tsn_r50, "2d", ()),
    "i3d_r50": Arch(i3d_r50, "3d", (Sampling("clip", 32, 2),)),
    "slowonly_r50_4x16": Arch(slowonly_r50_4x16, "3d", (Sampling("clip", 4, 16),)),
    "slowonly_r50_8x8": Arch(slowonly_r50_8x8, "3d", (Sampling("clip", 8, 8),)),
    "slowfast_r50_4x16": Arch(slowfast_r50_4x16, "slowfast", (Sampling("slow", 4, 16), Sampling("fast", 32, 2))),
    "slowfast_r50_8x8": Arch(slowfast_r50_8x8, "slowfast", (Sampling("slow", 8, 8), Sampling("fast", 32, 2))),
    # UCF101 config: Resize(-1, 128), CenterCrop(112) (171x128 for UCF101's 320x240); caffe-style mean, std 1
    "c3d_sports1m": Arch(
        c3d_sports1m, "3d", (Sampling("clip", 16, 1),), test=Geometry(112, 128), mean=(104, 117, 128), std=(1, 1, 1)
    ),
    "r2plus1d_r34_8x8": Arch(r2plus1d_r34_8x8, "3d", (Sampling("clip", 8, 8),)),
    "r2plus1d_r34_32x2": Arch(r2plus1d_r34_32x2, "3d", (Sampling("clip", 32, 2),)),
    "ircsn_r152": Arch(ircsn_r152, "3d", (Sampling("clip", 32, 2),)),
    "ipcsn_r152": Arch(ipcsn_r152, "3d", (Sampling("clip", 32, 2),)),
    # MMAction2's flow configs: TV-L1 flow (bound 20) as uint8, mean and std 128; TSN 5x1x3: 3 segments of 5 flow
    # fields (10 channels); SlowOnly 16x4x1: 16 flow fields 4 frames apart (2 channels)
    "tsn_r50_flow": Arch(tsn_r50_flow, "2d", (), segments=3, modality="flow", pairs=5, mean=FLOW_MEAN, std=FLOW_STD),
    "slowonly_r50_flow": Arch(
        slowonly_r50_flow, "3d", (Sampling("clip", 16, 4),), modality="flow", mean=FLOW_MEAN, std=FLOW_STD
    ),
    "tsm_r50_1x1x8": Arch(tsm_r50_1x1x8, "2d", (), segments=8),
    "tsm_r50_1x1x16": Arch(tsm_r50_1x1x16, "2d", (), segments=16),
    "tsm_mobilenetv2_1x1x8": Arch(tsm_mobilenetv2_1x1x8, "2d", (), segments=8),
    # the configs test with Resize(-1, s) and ThreeCrop(s): the centre one of the three crops
    "x3d_s_13x6x1": Arch(
        x3d_s_13x6x1, "3d", (Sampling("clip", 13, 6),), test=Geometry(182, 182), mean=X3D_MEAN, std=X3D_STD
    ),
    "x3d_m_16x5x1": Arch(
        x3d_m_16x5x1, "3d", (Sampling("clip", 16, 5),), test=Geometry(256, 256), mean=X3D_MEAN, std=X3D_STD
    ),
    # torchvision's S3D_Weights.KINETICS400_V1: 128 frames at 15 fps, resized to 256x256 (aspect not kept), 224 crop
    "s3d": Arch(
        s3d, "3d", (Sampling("clip", 128, 2),), test=Geometry(224, 256, (256, 256)), mean=S3D_MEAN, std=S3D_STD
    ),
}

# RGB archs → the flow archs with the same network (``actionstream train --modality flow`` trains these).
FLOW_VARIANTS = {
    "tsn_r50": "tsn_r50_flow",
    "slowonly_r50_4x16": "slowonly_r50_flow",
    "slowonly_r50_8x8": "slowonly_r50_flow",
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
