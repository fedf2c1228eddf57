"""Building blocks shared by the 2D and 3D backbones.

Parameter names follow MMAction2's ``ConvModule`` (``conv`` + ``bn``) so that MMAction2 checkpoints load
without a key map.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from torch import Tensor, nn

Conv: TypeAlias = "nn.Conv2d | nn.Conv3d | Conv2plus1d"  # what ConvBN wraps: a convolution with out_channels


class ConvBN(nn.Module):
    """Convolution without bias, then BatchNorm, then optional ReLU (``norm=False``: convolution only).

    ``conv`` may be any module with ``out_channels`` (e.g. :class:`Conv2plus1d`); 2D convolutions get a 2D BatchNorm,
    everything else a 3D one. ``act``: the activation's class (MobileNetV2: ``nn.ReLU6``)."""

    def __init__(
        self, conv: Conv, *, norm: bool = True, relu: bool = True, eps: float = 1e-5, act: type = nn.ReLU
    ) -> None:
        super().__init__()
        self.conv: nn.Module = conv  # (TSM wraps it in a TemporalShift later)
        bn = nn.BatchNorm2d if isinstance(conv, nn.Conv2d) else nn.BatchNorm3d
        self.bn = bn(conv.out_channels, eps=eps) if norm else None
        self.relu = act(inplace=True) if relu else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


# A 3D conv unit: (in channels, out channels, kernel, *, stride=..., relu=...) -> conv + BatchNorm (+ ReLU).
ConvUnit = Callable[..., ConvBN]


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
    groups: int = 1,
    eps: float = 1e-5,
) -> ConvBN:
    padding = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2, (kernel[2] - 1) // 2)
    conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False)
    return ConvBN(conv, norm=norm, relu=relu and norm, eps=eps)


class Conv2plus1d(nn.Module):
    """MMAction2's ``Conv2plus1d``: a ``(1, k, k)`` spatial convolution to ``mid`` channels, BatchNorm (``bn_s``),
    ReLU, then a ``(t, 1, 1)`` temporal one. ``mid`` is the R(2+1)D paper's parameter-matching width, with the
    temporal kernel taken as 3 whatever it is (MMAction2's formula, also for the 1x1x1 shortcuts). ``bn_s`` keeps
    the default eps (1e-5) whatever the model's BatchNorms have: MMAction2's ``ConvModule`` does not hand its
    ``norm_cfg`` to the convolution it builds."""

    def __init__(
        self, cin: int, cout: int, kernel: tuple[int, int, int], *, stride: tuple[int, int, int], eps: float = 1e-5
    ) -> None:
        super().__init__()
        kt, kh, kw = kernel
        mid = int(3 * (cin * cout * kh * kw) / (cin * kh * kw + 3 * cout))
        pad = ((kt - 1) // 2, (kh - 1) // 2, (kw - 1) // 2)
        self.out_channels = cout
        self.conv_s = nn.Conv3d(cin, mid, (1, kh, kw), stride=(1, *stride[1:]), padding=(0, *pad[1:]), bias=False)
        self.bn_s = nn.BatchNorm3d(mid, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.conv_t = nn.Conv3d(mid, cout, (kt, 1, 1), stride=(stride[0], 1, 1), padding=(pad[0], 0, 0), bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_t(self.relu(self.bn_s(self.conv_s(x))))


def conv2plus1d_bn(
    cin: int,
    cout: int,
    kernel: tuple[int, int, int],
    *,
    stride: tuple[int, int, int] = (1, 1, 1),
    relu: bool = True,
    eps: float = 1e-5,
) -> ConvBN:
    return ConvBN(Conv2plus1d(cin, cout, kernel, stride=stride), relu=relu, eps=eps)
