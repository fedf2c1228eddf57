"""3D ResNet as in MMAction2's ``ResNet3d`` / ``ResNet3dPathway`` ("3x1x1" inflation, pytorch style).

``inflate`` says, per stage and block, whether the block's first convolution gets a temporal kernel of 3.
A pathway with ``lateral`` set also owns the SlowFast lateral convolutions that carry the fast pathway's
features into it (MMAction2 keeps them on the slow pathway, hence their key names).

Variants pass what differs: the ``block`` class (default: basic below depth 50, bottleneck from 50), the ``conv``
unit every convolution + BatchNorm is made with (R(2+1)D: :func:`~export.models.layers.conv2plus1d_bn`; CSN and
R(2+1)D: BatchNorm eps 1e-3) and ``temporal_strides`` (on the strided convolution and the shortcut, as MMAction2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor, nn

from export.models.layers import ConvUnit, conv3d_bn
from export.models.resnet2d import STAGE_BLOCKS

Inflate = tuple[int | tuple[int, ...], ...]


class Block(Protocol):
    """A residual block's class: how many times its planes its output has, and how one is built."""

    expansion: int

    def __call__(
        self,
        cin: int,
        planes: int,
        stride: tuple[int, int],
        inflate: bool,
        downsample: nn.Module | None,
        conv: ConvUnit,
    ) -> nn.Module: ...


class BasicBlock3d(nn.Module):
    """Two 3x3x3 (not inflated: 1x3x3) convolutions; ``stride`` (temporal, spatial) on the first."""

    expansion = 1

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: tuple[int, int],
        inflate: bool,
        downsample: nn.Module | None,
        conv: ConvUnit = conv3d_bn,
    ) -> None:
        super().__init__()
        kt = 3 if inflate else 1
        st, ss = stride
        self.conv1 = conv(cin, planes, (kt, 3, 3), stride=(st, ss, ss))
        self.conv2 = conv(planes, planes, (kt, 3, 3), relu=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class Bottleneck3d(nn.Module):
    """1x1x1 ("3x1x1" when inflated), 1x3x3 with the ``stride`` (temporal, spatial), 1x1x1 to 4x the channels."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: tuple[int, int],
        inflate: bool,
        downsample: nn.Module | None,
        conv: ConvUnit = conv3d_bn,
    ) -> None:
        super().__init__()
        st, ss = stride
        self.conv1 = conv(cin, planes, (3 if inflate else 1, 1, 1))
        self.conv2 = conv(planes, planes, (1, 3, 3), stride=(st, ss, ss))
        self.conv3 = conv(planes, planes * 4, (1, 1, 1), relu=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


@dataclass(frozen=True)
class Lateral:
    """Fast → slow fusion: time-strided convolutions doubling the fast pathway's channels."""

    channel_ratio: int = 8
    speed_ratio: int = 8
    fusion_kernel: int = 5


class ResNet3d(nn.Module):
    """Clips ``[B, in_channels, T, H, W]`` (RGB: 3, flow: 2) → feature maps ``[B, C, T', H/32, W/32]`` (``H/16``:
    AVA's last stride 1)."""

    layer1: nn.Sequential  # added by name in __init__
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        *,
        depth: int = 50,
        width: int = 64,
        conv1_kernel: tuple[int, int, int] = (3, 7, 7),
        conv1_stride_t: int = 1,
        pool1_stride_t: int = 1,
        with_pool2: bool = True,
        inflate: Inflate = (1, 1, 1, 1),
        spatial_strides: tuple[int, int, int, int] = (1, 2, 2, 2),
        temporal_strides: tuple[int, int, int, int] = (1, 1, 1, 1),
        lateral: Lateral | None = None,
        block: Block | None = None,
        conv: ConvUnit = conv3d_bn,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"depth must be one of {', '.join(map(str, STAGE_BLOCKS))}, got {depth}")
        block = block or (Bottleneck3d if depth >= 50 else BasicBlock3d)
        self.conv1 = conv(in_channels, width, conv1_kernel, stride=(conv1_stride_t, 2, 2))
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(pool1_stride_t, 2, 2), padding=(0, 1, 1))
        self.pool2 = nn.MaxPool3d(kernel_size=(2, 1, 1), stride=(2, 1, 1)) if with_pool2 else None
        self.stages = [f"layer{i + 1}" for i in range(4)]
        self.laterals: list[str] = []

        cin = width
        for i, blocks in enumerate(STAGE_BLOCKS[depth]):
            if lateral is not None:
                name = "conv1_lateral" if i == 0 else f"layer{i}_lateral"
                fast = cin // lateral.channel_ratio
                kernel = (lateral.fusion_kernel, 1, 1)
                fuse = conv3d_bn(fast, 2 * fast, kernel, stride=(lateral.speed_ratio, 1, 1), norm=False)
                self.add_module(name, fuse)
                self.laterals.append(name)
                cin += 2 * fast
            planes = width * 2**i
            st, ss = temporal_strides[i], spatial_strides[i]
            cout = planes * block.expansion
            stage = inflate[i]
            flags = stage if isinstance(stage, tuple) else (stage,) * blocks
            if len(flags) != blocks:
                raise ValueError(f"inflate for stage {i + 1} needs {blocks} entries, got {len(flags)}")
            downsample = None
            if ss != 1 or cin != cout:  # MMAction2's condition: a temporal stride alone keeps the identity
                downsample = conv(cin, cout, (1, 1, 1), stride=(st, ss, ss), relu=False)
            layers = [block(cin, planes, (st, ss), bool(flags[0]), downsample, conv)]
            layers += [block(cout, planes, (1, 1), bool(f), None, conv) for f in flags[1:]]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            cin = cout
        self.out_channels = cin

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.conv1(x))

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer1(self.stem(x))
        if self.pool2 is not None:
            x = self.pool2(x)
        return self.layer4(self.layer3(self.layer2(x)))
