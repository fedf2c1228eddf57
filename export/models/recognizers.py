"""A backbone plus a head; ``forward`` takes normalised float clips and returns logits."""

from __future__ import annotations

from torch import Tensor, nn

from export.models.heads import I3DHead, SlowFastHead, TSNHead
from export.models.resnet2d import ResNet2d
from export.models.resnet3d import ResNet3d
from export.models.slowfast import SlowFast


class Recognizer2D(nn.Module):
    """TSN: ``[B, T, 3, H, W]`` (T segments, one frame each) → logits ``[B, K]``."""

    def __init__(self, backbone: ResNet2d | nn.Module, cls_head: TSNHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head

    def forward(self, x: Tensor) -> Tensor:
        segments = x.shape[1]
        return self.cls_head(self.backbone(x.flatten(0, 1)), segments)


class RecognizerTSM(Recognizer2D):
    """TSM: as TSN, with a backbone built for ``backbone.segments`` segments (it mixes neighbouring ones)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.backbone.segments:
            raise ValueError(f"this TSM model is built for {self.backbone.segments} segments, got {x.shape[1]}")
        return super().forward(x)


class Recognizer3D(nn.Module):
    """I3D / SlowOnly / R(2+1)D / CSN / X3D / C3D / S3D: ``[B, 3, T, H, W]`` → logits ``[B, K]``."""

    def __init__(self, backbone: ResNet3d | nn.Module, cls_head: I3DHead | nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head

    def forward(self, x: Tensor) -> Tensor:
        return self.cls_head(self.backbone(x))


class RecognizerSlowFast(nn.Module):
    """SlowFast: ``slow [B, 3, Ts, H, W]``, ``fast [B, 3, Tf, H, W]`` → logits ``[B, K]``."""

    def __init__(self, backbone: SlowFast, cls_head: SlowFastHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head

    def forward(self, slow: Tensor, fast: Tensor) -> Tensor:
        return self.cls_head(self.backbone(slow, fast))
