"""SlowFast backbone as in MMAction2's ``ResNet3dSlowFast``.

MMAction2 feeds one clip and subsamples it with nearest interpolation; our model takes the two rates as two
inputs (``slow[:, :, i] == fast[:, :, i * alpha]``), which is the same computation without the resampling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from export.models.resnet3d import Lateral, ResNet3d


class SlowFast(nn.Module):
    """``(slow [B, 3, Ts, H, W], fast [B, 3, Tf, H, W])`` → ``(slow features, fast features)``."""

    def __init__(
        self,
        *,
        depth: int = 50,
        width: int = 64,
        channel_ratio: int = 8,
        speed_ratio: int = 8,
        fusion_kernel: int = 5,
        spatial_strides: tuple[int, int, int, int] = (1, 2, 2, 2),
    ) -> None:
        super().__init__()
        lateral = Lateral(channel_ratio=channel_ratio, speed_ratio=speed_ratio, fusion_kernel=fusion_kernel)
        self.slow_path = ResNet3d(
            depth=depth,
            width=width,
            conv1_kernel=(1, 7, 7),
            with_pool2=False,
            inflate=(0, 0, 1, 1),
            spatial_strides=spatial_strides,
            lateral=lateral,
        )
        self.fast_path = ResNet3d(
            depth=depth,
            width=width // channel_ratio,
            conv1_kernel=(5, 7, 7),
            with_pool2=False,
            inflate=(1, 1, 1, 1),
            spatial_strides=spatial_strides,
        )
        self.out_channels = self.slow_path.out_channels + self.fast_path.out_channels

    def forward(self, slow: Tensor, fast: Tensor) -> tuple[Tensor, Tensor]:
        slow, fast = self.slow_path.stem(slow), self.fast_path.stem(fast)
        for stage, lateral in zip(self.slow_path.stages, self.slow_path.laterals, strict=True):
            slow = torch.cat((slow, getattr(self.slow_path, lateral)(fast)), dim=1)
            slow = getattr(self.slow_path, stage)(slow)
            fast = getattr(self.fast_path, stage)(fast)
        return slow, fast
