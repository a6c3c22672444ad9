"""DenseNet-BC for 32x32 images, as ``DenseNet3`` in the ODIN / Mahalanobis / DICE ``densenet.py``.

Same modules and attribute names, so the published state dicts load with ``strict=True``:
``conv1, block{1,2,3}.layer.N.{bn1,conv1,bn2,conv2}, trans{1,2}.{bn1,conv1}, bn1, fc``.
DenseNet-BC-100 (k=12, reduction 0.5): 342-d penultimate features.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import OODNet, init_like_original


class BasicBlock(nn.Module):
    """BN-ReLU-3x3 conv producing ``growth_rate`` channels, concatenated to the input (non-BC DenseNet)."""

    def __init__(self, in_planes: int, growth_rate: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x: Tensor) -> Tensor:
        out = F.dropout(self.conv1(F.relu(self.bn1(x))), self.drop_rate, self.training)
        return torch.cat([x, out], 1)


class BottleneckBlock(nn.Module):
    """BN-ReLU-1x1 conv (4k channels), BN-ReLU-3x3 conv (k channels), concatenated to the input."""

    def __init__(self, in_planes: int, growth_rate: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        inter = 4 * growth_rate
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, inter, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x: Tensor) -> Tensor:
        out = F.dropout(self.conv1(F.relu(self.bn1(x))), self.drop_rate, self.training)
        out = F.dropout(self.conv2(F.relu(self.bn2(out))), self.drop_rate, self.training)
        return torch.cat([x, out], 1)


class TransitionBlock(nn.Module):
    """BN-ReLU-1x1 conv (compression), then 2x2 average pooling."""

    def __init__(self, in_planes: int, out_planes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x: Tensor) -> Tensor:
        out = F.dropout(self.conv1(F.relu(self.bn1(x))), self.drop_rate, self.training)
        return F.avg_pool2d(out, 2)


class DenseBlock(nn.Module):
    """``nb_layers`` blocks in ``self.layer`` (an ``nn.Sequential``), each adding ``growth_rate`` channels."""

    def __init__(self, nb_layers: int, in_planes: int, growth_rate: int,
                 block: type[nn.Module], drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[block(in_planes + i * growth_rate, growth_rate, drop_rate) for i in range(nb_layers)]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class DenseNet3(OODNet):
    """Three dense blocks with two transitions; ``DenseNet3(100, 10)`` is the ODIN / DICE DenseNet-BC-100."""

    feature_map_names = ("conv1", "trans1", "trans2", "final")

    def __init__(self, depth: int, num_classes: int, growth_rate: int = 12, reduction: float = 0.5,
                 bottleneck: bool = True, drop_rate: float = 0.0) -> None:
        super().__init__()
        n = (depth - 4) // 3
        block: type[nn.Module] = BasicBlock
        if bottleneck:
            n //= 2
            block = BottleneckBlock
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, planes, kernel_size=3, padding=1, bias=False)
        self.block1 = DenseBlock(n, planes, growth_rate, block, drop_rate)
        planes += n * growth_rate
        self.trans1 = TransitionBlock(planes, math.floor(planes * reduction), drop_rate)
        planes = math.floor(planes * reduction)
        self.block2 = DenseBlock(n, planes, growth_rate, block, drop_rate)
        planes += n * growth_rate
        self.trans2 = TransitionBlock(planes, math.floor(planes * reduction), drop_rate)
        planes = math.floor(planes * reduction)
        self.block3 = DenseBlock(n, planes, growth_rate, block, drop_rate)
        planes += n * growth_rate
        self.bn1 = nn.BatchNorm2d(planes)
        self.fc = nn.Linear(planes, num_classes)
        self.feature_dim = planes
        self.num_classes = num_classes
        init_like_original(self)

    def stages(self) -> list[Callable[[Tensor], Tensor]]:
        """conv1 | block1+trans1 | block2+trans2 | block3+bn+ReLU (the maps Mahalanobis ensembles)."""
        return [
            self.conv1,
            lambda x: self.trans1(self.block1(x)),
            lambda x: self.trans2(self.block2(x)),
            lambda x: F.relu(self.bn1(self.block3(x))),
        ]
