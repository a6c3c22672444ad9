"""The interface every oodbench network exposes to the detectors.

A network is a chain of named stages (``feature_map_names``), then global average pooling to the
penultimate feature vector (``features``), then one linear layer (``head``). Detectors that work on
logits call ``forward``; feature-space detectors (Mahalanobis, DICE, ReAct, ...) call ``features`` and
``head`` separately; layer ensembles call ``feature_maps``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class OODNet(nn.Module):
    """Base class: subclasses set ``feature_dim``, ``num_classes``, ``feature_map_names``, an ``fc``
    layer and implement :meth:`stages` (one callable per name in ``feature_map_names``)."""

    feature_dim: int
    num_classes: int
    feature_map_names: tuple[str, ...] = ()
    fc: nn.Linear

    def stages(self) -> list[Callable[[Tensor], Tensor]]:
        """The network up to the last feature map, split at the points named in ``feature_map_names``."""
        raise NotImplementedError

    def feature_maps(self, x: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Outputs of the named stages (all of them when ``layers`` is None), in network order."""
        wanted = list(self.feature_map_names) if layers is None else list(layers)
        unknown = [name for name in wanted if name not in self.feature_map_names]
        if unknown:
            raise ValueError(f"unknown feature maps {unknown}; choose from {list(self.feature_map_names)}")
        out: dict[str, Tensor] = {}
        for name, stage in zip(self.feature_map_names, self.stages()):
            x = stage(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(set(wanted)):
                    break
        return out

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (N, feature_dim): last feature map (after its ReLU), global average pool."""
        for stage in self.stages():
            x = stage(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def head(self, feats: Tensor) -> Tensor:
        """The final linear layer: penultimate features -> logits."""
        return self.fc(feats)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) for normalized inputs (N, 3, H, W)."""
        return self.head(self.features(x))


def init_like_original(module: nn.Module) -> None:
    """The initialisation of the DenseNet / WRN reference code: He-normal convs (fan-out), BN = (1, 0),
    linear bias 0. Irrelevant for pretrained weights; kept so that training from scratch matches."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
