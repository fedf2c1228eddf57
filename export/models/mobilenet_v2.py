"""MobileNetV2 as in MMAction2's ``MobileNetV2`` backbone (width multiplier 1): a 3x3 stem, seven stages of
inverted residuals (1x1 expansion, depthwise 3x3, linear 1x1; ReLU6) and a 1x1 ``conv2`` to 1280 channels.
"""

from __future__ import annotations

from torch import Tensor, nn

from export.models.layers import ConvBN

# expansion, channels, blocks, stride of the first block
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_relu6(cin: int, cout: int, kernel: int, *, stride: int = 1, groups: int = 1, relu: bool = True) -> ConvBN:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
    return ConvBN(conv, relu=relu, act=nn.ReLU6)


class InvertedResidual(nn.Module):
    """``conv``: [1x1 expansion (unless ``expansion`` is 1)], depthwise 3x3 with the stride, linear 1x1; the input
    is added back when the shapes allow (stride 1, same channels)."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = int(round(cin * expansion))
        layers = [conv_bn_relu6(cin, hidden, 1)] if expansion != 1 else []
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride=stride, groups=hidden),
            conv_bn_relu6(hidden, cout, 1, relu=False),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """Frames ``[B, 3, H, W]`` → feature maps ``[B, 1280, H/32, W/32]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu6(3, 32, 3, stride=2)
        cin = 32
        for i, (expansion, cout, blocks, stride) in enumerate(STAGES):
            layers = [
                InvertedResidual(cin if j == 0 else cout, cout, stride if j == 0 else 1, expansion)
                for j in range(blocks)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            cin = cout
        self.conv2 = conv_bn_relu6(cin, 1280, 1)
        self.out_channels = 1280
        self.stages = [f"layer{i + 1}" for i in range(len(STAGES))]

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for stage in self.stages:
            x = getattr(self, stage)(x)
        return self.conv2(x)
