"""Channel-separated bottlenecks (CSN, Tran et al. 2019) as in MMAction2's ``CSNBottleneck3d``.

The block is MMAction2's "3x3x3" bottleneck whose middle convolution is depthwise (one group per channel), kept in
a ``conv2`` sequence for MMAction2's key names: ``conv2.0`` is the depthwise convolution of the interaction-reduced
block (ir-CSN); the interaction-preserved one (ip-CSN) puts a 1x1x1 convolution (BatchNorm, no ReLU) before it, so
its depthwise convolution is ``conv2.1``.
"""

from __future__ import annotations

from torch import Tensor, nn

from export.models.layers import ConvUnit, conv3d_bn


class IRCSNBottleneck3d(nn.Module):
    """1x1x1, depthwise 3x3x3 with the ``stride`` (temporal, spatial), 1x1x1 to 4x the channels (ir-CSN)."""

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
        self.conv1 = conv(cin, planes, (1, 1, 1))
        depthwise = conv(planes, planes, (3 if inflate else 1, 3, 3), stride=(st, ss, ss), groups=planes)
        self.conv2 = nn.Sequential(*self.interaction(planes, conv), depthwise)
        self.conv3 = conv(planes, planes * 4, (1, 1, 1), relu=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def interaction(planes: int, conv: ConvUnit) -> list[nn.Module]:
        """What runs before the depthwise convolution: nothing in ir-CSN."""
        return []

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class IPCSNBottleneck3d(IRCSNBottleneck3d):
    """ip-CSN: a 1x1x1 convolution (channel interactions) before the depthwise one."""

    @staticmethod
    def interaction(planes: int, conv: ConvUnit) -> list[nn.Module]:
        return [conv(planes, planes, (1, 1, 1), relu=False)]
