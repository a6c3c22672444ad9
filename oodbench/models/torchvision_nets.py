"""torchvision's ImageNet ResNet-50 and MobileNetV2 behind the :class:`~oodbench.models.base.OODNet` interface,
and the lookup of torchvision's published weight files.

The wrappers reuse torchvision's own modules under torchvision's attribute names, so a torchvision state dict
(``resnet50-0676ba61.pth``, ``mobilenet_v2-b0353104.pth``) loads unchanged and ``forward`` computes exactly
torchvision's ``forward``. ``features`` is the globally average-pooled last feature map (2048-d / 1280-d): where
ReAct clips and ASH shapes; ``head`` is the last Linear layer (MobileNetV2's ``Dropout`` is the identity in eval
mode and is left out).

Weights of a registered torchvision checkpoint are found by ``registry.locate_weights``: the weights directory,
then torch hub's cache (``torch.hub.get_dir()/checkpoints``), then -- only with ``download=True`` -- a download
into the hub cache. torch hub's file names carry the first hex digits of the file's sha256
(``resnet50-0676ba61.pth``); that prefix is checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data.files import sha256_file
from ..errors import CheckpointError
from .base import OODNet

_HUB_HASH = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's convention: <name>-<sha256 prefix>.<ext>


class TorchvisionResNet50(OODNet):
    """ResNet-50 (torchvision); feature maps ``layer1``..``layer4`` (``layer1`` includes the stem)."""

    feature_map_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        import torchvision  # only for these networks: importing it costs seconds

        tv = torchvision.models.resnet50(weights=None, num_classes=num_classes)
        self.conv1, self.bn1, self.relu, self.maxpool = tv.conv1, tv.bn1, tv.relu, tv.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        self.fc = tv.fc
        self.feature_dim, self.num_classes = tv.fc.in_features, num_classes

    def _stem_layer1(self, x: Tensor) -> Tensor:
        return self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))

    def stages(self) -> list[Callable[[Tensor], Tensor]]:
        return [self._stem_layer1, self.layer2, self.layer3, self.layer4]


# MobileNetV2's ``features`` Sequential, split where the resolution changes (for 224 input): 16×112², 24×56²,
# 32×28², 96×14², 1280×7² (the last block ends with the 1×1 conv to 1280 channels + ReLU6).
_MOBILENET_STAGES = (("stage1", 0, 2), ("stage2", 2, 4), ("stage3", 4, 7), ("stage4", 7, 14), ("stage5", 14, 19))


class TorchvisionMobileNetV2(OODNet):
    """MobileNetV2 (torchvision, width 1.0); feature maps ``stage1``..``stage5``.

    torchvision names its convolutional trunk ``features``, which is also the name of the OODNet method; the
    trunk is registered as submodule ``features`` (so state-dict keys are torchvision's, ``features.0.0.weight``
    ...) and reached through :attr:`trunk`. ``classifier`` is torchvision's ``Dropout(0.2), Linear``; ``fc`` is
    its Linear, which :meth:`head` applies.
    """

    feature_map_names = tuple(name for name, _, _ in _MOBILENET_STAGES)

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        import torchvision

        tv = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
        self._modules["features"] = tv.features  # not setattr: the name is taken by OODNet.features
        self.classifier = tv.classifier
        self.feature_dim, self.num_classes = tv.last_channel, num_classes

    @property
    def trunk(self) -> nn.Sequential:
        return self._modules["features"]  # type: ignore[return-value]

    @property
    def fc(self) -> nn.Linear:  # type: ignore[override]
        return self.classifier[1]  # type: ignore[return-value]

    def stages(self) -> list[Callable[[Tensor], Tensor]]:
        return [self.trunk[a:b] for _, a, b in _MOBILENET_STAGES]


def resnet50(num_classes: int = 1000) -> TorchvisionResNet50:
    return TorchvisionResNet50(num_classes)


def mobilenet_v2(num_classes: int = 1000) -> TorchvisionMobileNetV2:
    return TorchvisionMobileNetV2(num_classes)


def hub_hash_prefix(filename: str) -> str | None:
    """The sha256 prefix a torch hub file name carries (``resnet50-0676ba61.pth`` → ``0676ba61``), else None."""
    m = _HUB_HASH.search(Path(filename).name)
    return m.group(1) if m else None


def check_hub_prefix(path: Path, filename: str | None = None, what: str = "checkpoint") -> str:
    """sha256 of ``path``; raise :class:`CheckpointError` unless it starts with the prefix in ``filename``
    (default: the file's own name). Names without a prefix are accepted as they are."""
    digest = sha256_file(path)
    prefix = hub_hash_prefix(filename or path.name)
    if prefix and not digest.startswith(prefix):
        raise CheckpointError(f"{what} at {path} has sha256 {digest[:12]}... but its published name "
                              f"{filename or path.name} says it starts with {prefix}: the file is corrupt or "
                              "another checkpoint; download it again")
    return digest


def hub_checkpoint_dir() -> Path:
    """torch hub's download folder, where torchvision keeps the weights it downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints"
