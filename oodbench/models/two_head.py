"""The two-head network of MCD (Yu & Aizawa, ICCV 2019): one feature extractor, two linear classifiers.

The second head lives inside the first: :class:`TwoHeadLinear` *is* the network's ``fc`` (head 1, so ``head(f)``,
accuracy, and every logit detector see head-1 logits) and owns ``fc.second`` (head 2). ``fc.both(f)`` gives
both heads' logits. State-dict keys: the base architecture's plus ``fc.second.weight``, ``fc.second.bias``, so
``load_classifier`` builds it from the registered arch ``densenet100_mcd`` and checks ``fc.weight`` as usual.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from oodbench.errors import OodbenchError
from oodbench.models.base import OODNet
from oodbench.models.densenet import DenseNet3

SUFFIX = "_mcd"


class TwoHeadLinear(nn.Linear):
    """Head 1 (this Linear layer) plus head 2 (``self.second``) on the same features."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.second = nn.Linear(in_features, out_features)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.second.bias)

    def both(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """(head-1 logits, head-2 logits)."""
        return super().forward(feats), self.second(feats)


def to_two_head(net: OODNet) -> OODNet:
    """Replace ``net.fc`` by a :class:`TwoHeadLinear` whose two heads both start as copies of the old ``fc``."""
    old = net.fc
    fc = TwoHeadLinear(old.in_features, old.out_features)
    with torch.no_grad():
        for head in (fc, fc.second):
            head.weight.copy_(old.weight)
            head.bias.copy_(old.bias)
    net.fc = fc
    return net


def densenet100_mcd(num_classes: int) -> OODNet:
    """DenseNet-BC-100 with two heads (the MCD paper's CIFAR network); registered as ``densenet100_mcd``."""
    return to_two_head(DenseNet3(100, num_classes))


def both_heads(model: nn.Module) -> TwoHeadLinear:
    """The :class:`TwoHeadLinear` inside ``model`` (a Classifier, an OODNet, or the head itself)."""
    if isinstance(model, TwoHeadLinear):
        return model
    owner = getattr(model, "__self__", model)  # a bound method such as Classifier.head
    if isinstance(owner, nn.Module):
        for module in owner.modules():
            if isinstance(module, TwoHeadLinear):
                return module
    raise OodbenchError("the MCD discrepancy needs a two-head checkpoint (arch densenet100_mcd, trained with "
                        "`python train.py method=mcd`); this model has one head")


def expand_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A one-head state dict with ``fc.second.*`` added as copies of ``fc.*`` (initialising MCD from a classifier)."""
    if "fc.weight" not in state:
        raise OodbenchError("cannot initialise the two-head MCD network: the checkpoint has no fc layer")
    out = dict(state)
    out.setdefault("fc.second.weight", state["fc.weight"].clone())
    out.setdefault("fc.second.bias", state["fc.bias"].clone())
    return out
