"""Spatio-temporal (AVA-style) action detection: the action part of MMAction2's AVA ``FastRCNN``.

Person boxes come from outside (a person detector); the model scores each box's actions. MMAction2 names and
numerics: a 3D backbone whose last stage keeps stride 16 (``spatial_strides=(1, 2, 2, 1)``), then
``roi_head.bbox_roi_extractor`` (``SingleRoIExtractor3D``: temporal mean, RoIAlign 8x8) and
``roi_head.bbox_head`` (``BBoxHeadAVA``: temporal mean, spatial max, ``fc_cls`` with 81 logits, 0 = background).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from export.models.resnet3d import ResNet3d
from export.models.slowfast import SlowFast


class SingleRoIExtractor3D(nn.Module):
    """Features ``(slow[, fast])`` ``[B, C, t, h, w]`` + rois ``[K, 5]`` → per-box features ``[K, ΣC, 1, s, s]``.

    ``rois`` rows are ``(clip index, x1, y1, x2, y2)`` in input pixels. Each pathway is averaged over time and the
    pathways are concatenated in backbone order (slow, fast). MMAction2 first resamples every pathway to the longest
    t (nearest); the fast t being a multiple of the slow one, that repeats slow frames and leaves the mean unchanged
    up to float rounding. RoIAlign runs in float32 (fp16 models too) with MMAction2's arguments.
    """

    def __init__(
        self, *, output_size: int = 8, featmap_stride: int = 16, sampling_ratio: int = 0, aligned: bool = True
    ) -> None:
        super().__init__()
        self.output_size, self.spatial_scale = output_size, 1.0 / featmap_stride
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, feats: tuple[Tensor, ...], rois: Tensor) -> Tensor:
        x = torch.cat([f.mean(dim=2) for f in feats], dim=1)
        out = roi_align(
            x.float(),
            rois.float(),
            output_size=self.output_size,
            spatial_scale=self.spatial_scale,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )
        return out.to(x.dtype).unsqueeze(2)


class BBoxHeadAVA(nn.Module):
    """Per-box features ``[K, C, t, s, s]`` → logits ``[K, num_classes]``: dropout, mean over t, max over space."""

    def __init__(self, in_channels: int, num_classes: int = 81, *, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc_cls = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(x).mean(dim=2).amax(dim=(2, 3))
        return self.fc_cls(x)


class AVARoIHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int = 81, *, dropout: float = 0.5) -> None:
        super().__init__()
        self.bbox_roi_extractor = SingleRoIExtractor3D()
        self.bbox_head = BBoxHeadAVA(in_channels, num_classes, dropout=dropout)

    def forward(self, feats: tuple[Tensor, ...], rois: Tensor) -> Tensor:
        return self.bbox_head(self.bbox_roi_extractor(feats, rois))


class ActionDetector(nn.Module):
    """Normalised clip(s) ``[B, 3, T, H, W]`` (SlowFast: slow, fast) + ``rois [K, 5]`` → logits ``[K, classes]``."""

    def __init__(self, backbone: ResNet3d | SlowFast, roi_head: AVARoIHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.roi_head = roi_head

    def forward(self, *clips: Tensor, rois: Tensor) -> Tensor:
        feats = self.backbone(*clips)
        return self.roi_head(feats if isinstance(feats, tuple) else (feats,), rois)
