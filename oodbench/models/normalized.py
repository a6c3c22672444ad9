"""A network with its checkpoint's input normalization as the first step.

Inputs are pixels in [0, 1], shape (N, 3, H, W). Input-space methods (ODIN's perturbation, FGSM-style
steps) then act in pixel space: a step of ``eps`` on the input equals ``eps / std`` after normalization.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import OODNet


class Classifier(nn.Module):
    """``net`` preceded by ``(x - mean) / std`` (per channel); same interface as :class:`OODNet`."""

    def __init__(self, net: OODNet, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean/std must have equal length and std > 0, got {mean} / {std}")
        self.net = net
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1))

    @property
    def feature_dim(self) -> int:
        return self.net.feature_dim

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    @property
    def feature_map_names(self) -> tuple[str, ...]:
        return self.net.feature_map_names

    def normalize(self, x: Tensor) -> Tensor:
        """Pixels in [0, 1] -> the network's input space."""
        return (x - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        """Logits for pixels in [0, 1]."""
        return self.net(self.normalize(x))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (N, feature_dim) for pixels in [0, 1]."""
        return self.net.features(self.normalize(x))

    def head(self, feats: Tensor) -> Tensor:
        """Logits from penultimate features (no normalization involved)."""
        return self.net.head(feats)

    def feature_maps(self, x: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Intermediate feature maps for pixels in [0, 1]; see :meth:`OODNet.feature_maps`."""
        return self.net.feature_maps(self.normalize(x), layers)
