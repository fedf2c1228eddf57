"""X3D (Feichtenhofer 2020) as in MMAction2's ``X3D`` backbone.

A stem of a 1x3x3 convolution (no BatchNorm) and a depthwise 5x1x1 one, four stages of ``BlockX3D`` (1x1x1,
depthwise 3x3x3, squeeze-excitation on every other block, swish, 1x1x1 back to the stage width, residual, ReLU) and a
1x1x1 ``conv5``. ``width`` is the stem's channels (24: MMAction2's ``base_channels`` at ``gamma_w=1``); stages are
``width * 2**i`` wide, their inner convolutions ``gamma_b`` times that; ``gamma_d`` multiplies the blocks per stage
(1, 2, 5, 3), rounded up as MMAction2 does. X3D-S and X3D-M are the same network (``gamma_b=2.25, gamma_d=2.2``)
fed different clips.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from export.models.layers import ConvBN, conv3d_bn

BASE_BLOCKS = (1, 2, 5, 3)


def round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """``width * multiplier`` to a multiple of ``divisor`` (at least ``min_width``, at most 10 % below)."""
    width *= multiplier
    rounded = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * width:
        rounded += divisor
    return int(rounded)


class SqueezeExcite(nn.Module):
    """Channel gates from the clip-wide mean: 1x1x1 ``fc1`` (ReLU), ``fc2`` (sigmoid), times the input."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        bottleneck = round_width(channels, ratio)
        self.fc1 = nn.Conv3d(channels, bottleneck, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv3d(bottleneck, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc2(self.relu(self.fc1(x.mean(dim=(2, 3, 4), keepdim=True))))
        return x * torch.sigmoid(gate)


class BlockX3D(nn.Module):
    def __init__(
        self, cin: int, planes: int, cout: int, stride: int, downsample: nn.Module | None, se_ratio: float | None
    ) -> None:
        super().__init__()
        self.conv1 = conv3d_bn(cin, planes, (1, 1, 1))
        self.conv2 = conv3d_bn(planes, planes, (3, 3, 3), stride=(1, stride, stride), groups=planes, relu=False)
        self.se_module = SqueezeExcite(planes, se_ratio) if se_ratio is not None else None
        self.conv3 = conv3d_bn(planes, cout, (1, 1, 1), relu=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        if self.se_module is not None:
            out = self.se_module(out)
        out = out * torch.sigmoid(out)  # swish
        return self.relu(self.conv3(out) + identity)


class X3D(nn.Module):
    """Clips ``[B, 3, T, H, W]`` → feature maps ``[B, C, T, H/32, W/32]``."""

    layer1: nn.Sequential  # added by name in __init__
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        *,
        width: int = 24,
        gamma_b: float = 2.25,
        gamma_d: float = 2.2,
        se_ratio: float = 1 / 16,
        spatial_strides: tuple[int, int, int, int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        self.conv1_s = ConvBN(
            nn.Conv3d(3, width, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False), norm=False, relu=False
        )
        self.conv1_t = conv3d_bn(width, width, (5, 1, 1), groups=width)
        cin = width
        for i, base in enumerate(BASE_BLOCKS):
            blocks, cout, stride = math.ceil(gamma_d * base), width * 2**i, spatial_strides[i]
            planes = int(cout * gamma_b)
            downsample = None
            if stride != 1 or cin != cout:
                downsample = conv3d_bn(cin, cout, (1, 1, 1), stride=(1, stride, stride), relu=False)
            layers = [BlockX3D(cin, planes, cout, stride, downsample, se_ratio)]
            layers += [
                BlockX3D(cout, planes, cout, 1, None, se_ratio if j % 2 == 0 else None) for j in range(1, blocks)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            cin = cout
        self.conv5 = conv3d_bn(cin, int(cin * gamma_b), (1, 1, 1))
        self.out_channels = int(cin * gamma_b)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1_t(self.conv1_s(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.conv5(x)
