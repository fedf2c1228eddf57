"""2D ResNet as in MMAction2's ``ResNet`` (pytorch style: the stride sits on the 3x3 convolution)."""

from __future__ import annotations

from torch import Tensor, nn

from export.models.layers import conv2d_bn

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class BasicBlock2d(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = conv2d_bn(cin, planes, 3, stride=stride)
        self.conv2 = conv2d_bn(planes, planes, 3, relu=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class Bottleneck2d(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = conv2d_bn(cin, planes, 1)
        self.conv2 = conv2d_bn(planes, planes, 3, stride=stride)
        self.conv3 = conv2d_bn(planes, planes * 4, 1, relu=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class ResNet2d(nn.Module):
    """Frames ``[B, in_channels, H, W]`` (RGB: 3; TSN on flow: 2 × the stacked flow fields) → feature maps
    ``[B, C, H/32, W/32]``."""

    layer1: nn.Sequential  # added by name in __init__
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, *, depth: int = 50, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        block = Bottleneck2d if depth >= 50 else BasicBlock2d
        self.conv1 = conv2d_bn(in_channels, width, 7, stride=2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = width
        for i, blocks in enumerate(STAGE_BLOCKS[depth]):
            planes = width * 2**i
            stride = 1 if i == 0 else 2
            cout = planes * block.expansion
            downsample = conv2d_bn(cin, cout, 1, stride=stride, relu=False) if stride != 1 or cin != cout else None
            layers = [block(cin, planes, stride, downsample)]
            layers += [block(cout, planes, 1, None) for _ in range(1, blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            cin = cout
        self.out_channels = cin

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
