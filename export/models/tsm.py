"""TSM (Lin et al. 2019) as in MMAction2's ``ResNetTSM`` and ``MobileNetV2TSM``: a 2D backbone over the segments
whose residual branches first shift a quarter of their input channels in time (1/8 one segment back, 1/8 one
forward, zeros at the clip's ends), so neighbouring segments exchange features at no cost in parameters.

The shift is slices and concatenations (no custom operator in the exported graph). The backbone is built for one
segment count, as MMAction2's: its input is ``[B * segments, 3, H, W]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from export.models.mobilenet_v2 import InvertedResidual, MobileNetV2
from export.models.resnet2d import BasicBlock2d, Bottleneck2d, ResNet2d


class TemporalShift(nn.Module):
    """Shift, then ``net``. Key names: the wrapped module moves under ``net``, as in MMAction2."""

    def __init__(self, net: nn.Module, segments: int, shift_div: int = 8) -> None:
        super().__init__()
        self.net, self.segments, self.shift_div = net, segments, shift_div

    def forward(self, x: Tensor) -> Tensor:
        _, c, h, w = x.shape
        x = x.reshape(-1, self.segments, c, h * w)
        fold = c // self.shift_div
        zeros = x[:, :1, :fold] * 0  # computed, not a shape-dependent constant: no shape ops in the graph
        back = torch.cat((x[:, 1:, :fold], zeros), dim=1)  # segment t gets channels [0, fold) of t + 1
        forward = torch.cat((zeros, x[:, :-1, fold : 2 * fold]), dim=1)  # [fold, 2 fold) of t - 1
        x = torch.cat((back, forward, x[:, :, 2 * fold :]), dim=2)
        return self.net(x.reshape(-1, c, h, w))


class ResNetTSM(ResNet2d):
    """``ResNet2d`` whose blocks shift before their first convolution ("blockres"; every other block from
    ResNet-101 on, as MMAction2)."""

    def __init__(self, *, depth: int = 50, width: int = 64, segments: int = 8, shift_div: int = 8) -> None:
        super().__init__(depth=depth, width=width)
        self.segments = segments
        every = 2 if len(self.layer3) >= 23 else 1
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for i, block in enumerate(stage):
                if i % every == 0 and isinstance(block, BasicBlock2d | Bottleneck2d):
                    block.conv1.conv = TemporalShift(block.conv1.conv, segments, shift_div)


class MobileNetV2TSM(MobileNetV2):
    """``MobileNetV2`` whose inverted residuals with an expansion and a shortcut shift before their first
    (expansion) convolution."""

    def __init__(self, *, segments: int = 8, shift_div: int = 8) -> None:
        super().__init__()
        self.segments = segments
        for m in self.modules():
            if isinstance(m, InvertedResidual) and len(m.conv) == 3 and m.use_res_connect:
                m.conv[0] = TemporalShift(m.conv[0], segments, shift_div)
