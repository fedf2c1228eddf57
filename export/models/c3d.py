"""C3D (Tran et al. 2015) as in MMAction2's ``C3D`` backbone: eight 3x3x3 convolutions with biases and no
BatchNorm, five max-pools, then ``fc6`` and ``fc7`` (4096 units, ReLU, dropout after ``fc6``).

``fc6`` takes the flattened last pool, so its size follows the clip: 16 frames of 112x112 give MMAction2's
``out_dim`` of 8192 (512 x 1 x 4 x 4). ``width`` scales every layer (64: MMAction2's; the fully connected layers
have 64 x ``width`` units); ``frames`` and ``size`` give the clip the model is built for.
"""

from __future__ import annotations

from torch import Tensor, nn

from export.models.layers import ConvBN


def _conv(cin: int, cout: int) -> ConvBN:
    return ConvBN(nn.Conv3d(cin, cout, 3, padding=1), norm=False)  # bias: no norm (ConvModule's bias="auto")


class C3D(nn.Module):
    """Clips ``[B, 3, frames, size, size]`` → features ``[B, 64 * width]``."""

    def __init__(self, *, width: int = 64, frames: int = 16, size: int = 112, dropout: float = 0.5) -> None:
        super().__init__()
        c = (width, 2 * width, 4 * width, 8 * width)
        self.conv1a = _conv(3, c[0])
        self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.conv2a = _conv(c[0], c[1])
        self.pool2 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.conv3a, self.conv3b = _conv(c[1], c[2]), _conv(c[2], c[2])
        self.pool3 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.conv4a, self.conv4b = _conv(c[2], c[3]), _conv(c[3], c[3])
        self.pool4 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.conv5a, self.conv5b = _conv(c[3], c[3]), _conv(c[3], c[3])
        self.pool5 = nn.MaxPool3d(kernel_size=2, stride=2, padding=(0, 1, 1))
        t, s = frames // 16, size // 16 // 2 + 1  # pool1 keeps time; pool5 pads space by 1
        if t < 1 or size < 16:
            raise ValueError(f"C3D needs clips of at least 16 frames of 16x16, got {frames} of {size}x{size}")
        self.fc6 = nn.Linear(c[3] * t * s * s, 64 * width)
        self.fc7 = nn.Linear(64 * width, 64 * width)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.out_channels = 64 * width

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.conv1a(x))
        x = self.pool2(self.conv2a(x))
        x = self.pool3(self.conv3b(self.conv3a(x)))
        x = self.pool4(self.conv4b(self.conv4a(x)))
        x = self.pool5(self.conv5b(self.conv5a(x)))
        x = self.dropout(self.relu(self.fc6(x.flatten(1))))
        return self.relu(self.fc7(x))
