"""Wide ResNet for 32x32 images with the Outlier-Exposure / Energy ``wrn.py`` key layout.

Keys: ``conv1, block{1,2,3}.layer.N.{bn1,conv1,bn2,conv2[,convShortcut]}, bn1, fc``.
WRN-40-2: 128-d penultimate features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from .base import OODNet, init_like_original


class WideBasicBlock(nn.Module):
    """Pre-activation residual block; a 1x1 ``convShortcut`` on the activated input when widths differ."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.convShortcut: nn.Conv2d | None = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        out = self.conv2(F.dropout(out, self.drop_rate, self.training))
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    """``nb_layers`` residual blocks in ``self.layer``; the first one changes width and stride."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
            for i in range(nb_layers)
        ])

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(OODNet):
    """WRN-depth-k: ``WideResNet(40, 10, 2)`` is the OE / Energy CIFAR-10 network."""

    feature_map_names = ("conv1", "block1", "block2", "final")

    def __init__(self, depth: int, num_classes: int, widen_factor: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self.feature_dim = widths[3]
        self.num_classes = num_classes
        init_like_original(self)

    def set_drop_rate(self, drop_rate: float) -> None:
        """Dropout before each block's second conv (OE / Energy train WRN-40-2 with 0.3); not in the state dict,
        so a checkpoint loads the same whatever it was trained with, and eval mode never drops."""
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        for m in self.modules():
            if isinstance(m, WideBasicBlock):
                m.drop_rate = float(drop_rate)

    def stages(self) -> list[Callable[[Tensor], Tensor]]:
        """conv1 | block1 | block2 | block3+bn+ReLU."""
        return [self.conv1, self.block1, self.block2, lambda x: F.relu(self.bn1(self.block3(x)))]
