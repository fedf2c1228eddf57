"""S3D (Xie et al. 2018) as torchvision's ``torchvision.models.video.s3d``, under this project's key names.

MMAction2 has no S3D; the reference is torchvision 0.29 (its Kinetics-400 weights are the ones published). Every
convolution is a conv + BatchNorm (eps 1e-3) + ReLU unit (``conv``/``bn``, as elsewhere in the zoo); a separable
convolution is a ``spatial`` 1xkxk unit then a ``temporal`` kx1x1 one; the layers are named after the paper's
(Inception) ones. :func:`torchvision_key` gives the torchvision name of each of our keys and
:meth:`RecognizerS3D.adapt_state_dict` loads torchvision checkpoints (``s3d-d76dad2f.pth``) as they are.

``width`` scales every layer's channels (64: torchvision's, whose stem has 64). The head averages the last
feature map over space, then over every pair of consecutive time steps, then over time: torchvision's
``AvgPool3d((2, 7, 7), stride=1)`` and mean, at the 224x224 crop it is made for (7x7 features), and any other size.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from export.models.layers import ConvUnit, conv3d_bn
from export.models.recognizers import Recognizer3D

EPS = 1e-3
# Inception blocks: (branch0, branch1 in -> out, branch2 in -> out, branch3), torchvision's channels.
MIXED = {
    "mixed_3b": (64, 96, 128, 16, 32, 32),
    "mixed_3c": (128, 128, 192, 32, 96, 64),
    "mixed_4b": (192, 96, 208, 16, 48, 64),
    "mixed_4c": (160, 112, 224, 24, 64, 64),
    "mixed_4d": (128, 128, 256, 24, 64, 64),
    "mixed_4e": (112, 144, 288, 32, 64, 64),
    "mixed_4f": (256, 160, 320, 32, 128, 128),
    "mixed_5b": (256, 160, 320, 32, 128, 128),
    "mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Our names of the parts of a unit and of a separable convolution → torchvision's (``Sequential`` indices).
UNIT_INDEX = {"conv": "0", "bn": "1", "spatial": "0", "temporal": "1"}
# torchvision's ``features`` in order: our layer names.
LAYERS = (
    "conv_1a", "pool_2a", "conv_2b", "conv_2c", "pool_3a", "mixed_3b", "mixed_3c", "pool_4a",
    "mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f", "pool_5a", "mixed_5b", "mixed_5c",
)  # fmt: skip


class SepConv3d(nn.Module):
    """A 1xkxk convolution (spatial stride), then a kx1x1 one (temporal stride), each with BatchNorm and ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, conv: ConvUnit) -> None:
        super().__init__()
        self.spatial = conv(cin, cout, (1, kernel, kernel), stride=(1, stride, stride))
        self.temporal = conv(cout, cout, (kernel, 1, 1), stride=(stride, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.temporal(self.spatial(x))


class SepInception3d(nn.Module):
    """Four branches concatenated: 1x1x1; 1x1x1 then separable 3x3x3 (twice); 3x3x3 max-pool then 1x1x1."""

    def __init__(self, cin: int, channels: tuple[int, ...], conv: ConvUnit) -> None:
        super().__init__()
        b0, b1_mid, b1, b2_mid, b2, b3 = channels
        self.branch0 = conv(cin, b0, (1, 1, 1))
        self.branch1 = nn.Sequential(conv(cin, b1_mid, (1, 1, 1)), SepConv3d(b1_mid, b1, 3, 1, conv))
        self.branch2 = nn.Sequential(conv(cin, b2_mid, (1, 1, 1)), SepConv3d(b2_mid, b2, 3, 1, conv))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, stride=1, padding=1), conv(cin, b3, (1, 1, 1)))
        self.out_channels = b0 + b1 + b2 + b3

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), dim=1)


class S3D(nn.Module):
    """Clips ``[B, 3, T, H, W]`` → feature maps ``[B, 1024, T/8, H/32, W/32]`` (width 64)."""

    def __init__(self, *, width: int = 64) -> None:
        super().__init__()
        conv = partial(conv3d_bn, eps=EPS)

        def ch(c: int) -> int:
            return max(1, c * width // 64)

        self.conv_1a = SepConv3d(3, ch(64), 7, 2, conv)
        self.pool_2a = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.conv_2b = conv(ch(64), ch(64), (1, 1, 1))
        self.conv_2c = SepConv3d(ch(64), ch(192), 3, 1, conv)
        self.pool_3a = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.pool_4a = nn.MaxPool3d(3, stride=2, padding=1)
        self.pool_5a = nn.MaxPool3d(2, stride=2)
        cin = ch(192)
        for name, channels in MIXED.items():
            block = SepInception3d(cin, tuple(ch(c) for c in channels), conv)
            setattr(self, name, block)
            cin = block.out_channels
        self.out_channels = cin
        self.layers = [getattr(self, name) for name in LAYERS]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class S3DHead(nn.Module):
    """Features → logits: mean over space, over each pair of consecutive time steps, over time; dropout; ``fc_cls``
    (torchvision's ``classifier``: a 1x1x1 convolution, which commutes with the means)."""

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float = 0.2) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc_cls = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] < 2:
            raise ValueError(f"S3D needs at least 2 time steps of features (9+ frames), got {x.shape[2]}")
        x = x.mean(dim=(3, 4))
        x = ((x[:, :, 1:] + x[:, :, :-1]) / 2).mean(dim=2)
        return self.fc_cls(self.dropout(x))


def torchvision_key(key: str) -> str:
    """Our state-dict key → torchvision's (``backbone.mixed_3b.branch1.1.spatial.bn.weight`` →
    ``features.5.branch1.1.0.1.weight``; ``cls_head.fc_cls.*`` → ``classifier.1.*``)."""
    if key.startswith("cls_head.fc_cls."):
        return "classifier.1." + key.removeprefix("cls_head.fc_cls.")
    name, *path = key.removeprefix("backbone.").split(".")
    parts = [UNIT_INDEX.get(part, part) for part in path[:-1]] + path[-1:]
    return ".".join(["features", str(LAYERS.index(name)), *parts])


class RecognizerS3D(Recognizer3D):
    """``Recognizer3D`` that also loads torchvision's S3D state dicts (their keys renamed, the classifier's 1x1x1
    convolution reshaped to a linear layer)."""

    def adapt_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        if "classifier.1.weight" not in state:
            return state
        ours = {torchvision_key(k): k for k in self.state_dict()}
        out = {ours.get(k, k): v for k, v in state.items()}
        if (w := out.get("cls_head.fc_cls.weight")) is not None and w.dim() == 5:
            out["cls_head.fc_cls.weight"] = w.flatten(1)
        return out
