"""Classification heads as in MMAction2 (``TSNHead``, ``I3DHead``, ``SlowFastHead``, ``TSMHead``, ``X3DHead``):
pool, dropout, ``fc_cls`` (X3D: ``fc1``, ``fc2``).

They return logits; the activation (softmax) is applied by the exporter, as MMAction2 applies it at test time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TSNHead(nn.Module):
    """Per-frame features ``[B*T, C, h, w]`` → logits ``[B, K]``, averaging the T segments (AvgConsensus)."""

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float = 0.4) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc_cls = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor, segments: int) -> Tensor:
        x = x.mean(dim=(2, 3))
        x = x.reshape(-1, segments, x.shape[1]).mean(dim=1)
        return self.fc_cls(self.dropout(x))


class I3DHead(nn.Module):
    """Clip features ``[B, C, t, h, w]`` → logits ``[B, K]``."""

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc_cls = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_cls(self.dropout(x.mean(dim=(2, 3, 4))))


class SlowFastHead(I3DHead):
    """``(slow, fast)`` features → logits; pooled features are concatenated fast first, as in MMAction2."""

    def forward(self, x: tuple[Tensor, Tensor]) -> Tensor:  # type: ignore[override]
        slow, fast = x
        pooled = torch.cat((fast.mean(dim=(2, 3, 4)), slow.mean(dim=(2, 3, 4))), dim=1)
        return self.fc_cls(self.dropout(pooled))


class FlatHead(I3DHead):
    """Flat features ``[B, C]`` → logits: MMAction2's ``I3DHead`` with ``spatial_type=None`` (C3D, whose backbone
    ends with fully connected layers)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_cls(self.dropout(x))


class TSMHead(TSNHead):
    """MMAction2's ``TSMHead``: per-frame features ``[B*T, C, h, w]`` → per-segment logits, averaged over the T
    segments (the classifier before the consensus; TSN's averages the features first)."""

    def forward(self, x: Tensor, segments: int) -> Tensor:
        logits = self.fc_cls(self.dropout(x.mean(dim=(2, 3))))
        return logits.reshape(-1, segments, logits.shape[1]).mean(dim=1)


class X3DHead(nn.Module):
    """MMAction2's ``X3DHead``: clip features → ``fc1`` (2048, no bias), ReLU, dropout, ``fc2`` → logits."""

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float = 0.5, mid_channels: int = 2048) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels, mid_channels, bias=False)
        self.fc2 = nn.Linear(mid_channels, num_classes)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.relu(self.fc1(x.mean(dim=(2, 3, 4))))))
