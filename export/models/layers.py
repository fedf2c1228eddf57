"""Building blocks shared by the 2D and 3D backbones.

Parameter names follow MMAction2's ``ConvModule`` (``conv`` + ``bn``) so that MMAction2 checkpoints load
without a key map.
"""

from __future__ import annotations

from torch import Tensor, nn


class ConvBN(nn.Module):
    """Convolution without bias, then BatchNorm, then optional ReLU (``norm=False``: convolution only)."""

    def __init__(self, conv: nn.Conv2d | nn.Conv3d, *, norm: bool = True, relu: bool = True) -> None:
        super().__init__()
        self.conv = conv
        bn = nn.BatchNorm3d if isinstance(conv, nn.Conv3d) else nn.BatchNorm2d
        self.bn = bn(conv.out_channels) if norm else None
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


def conv2d_bn(cin: int, cout: int, kernel: int, *, stride: int = 1, relu: bool = True) -> ConvBN:
    return ConvBN(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False), relu=relu)


def conv3d_bn(
    cin: int,
    cout: int,
    kernel: tuple[int, int, int],
    *,
    stride: tuple[int, int, int] = (1, 1, 1),
    norm: bool = True,
    relu: bool = True,
) -> ConvBN:
    padding = tuple((k - 1) // 2 for k in kernel)
    conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
    return ConvBN(conv, norm=norm, relu=relu and norm)
