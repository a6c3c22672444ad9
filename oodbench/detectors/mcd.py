"""Maximum Classifier Discrepancy (Yu & Aizawa, ICCV 2019), test time.

A two-head network (trained with ``python train.py method=mcd``) scores an input by the L1 distance between its
heads' softmax outputs, sum_c |p1_c(x) - p2_c(x)|, which is large for OOD inputs. oodbench's convention is
higher = more in-distribution, so the score is the negative distance.
"""

from __future__ import annotations

import torch
from torch import nn

from oodbench.detectors.base import FeatureDetector
from oodbench.models.two_head import both_heads


class MCDDiscrepancy(FeatureDetector):
    """S(x) = -|| softmax(F1(h(x))) - softmax(F2(h(x))) ||_1 from penultimate features h(x)."""

    def score_features(self, features: torch.Tensor, head: nn.Module) -> torch.Tensor:
        logits1, logits2 = both_heads(head).both(features)
        return -mcd_score(logits1.double(), logits2.double())


def mcd_score(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """Test-time discrepancy per sample (Yu & Aizawa 2019, Eq. 2 at test time): the L1 distance
    sum_c |softmax(f1)_c - softmax(f2)_c| (higher = more OOD); computed in at least float32."""
    def up(t: torch.Tensor) -> torch.Tensor:  # half-precision logits under AMP are promoted
        return t.to(torch.promote_types(t.dtype, torch.float32))

    return (torch.softmax(up(logits1), dim=1) - torch.softmax(up(logits2), dim=1)).abs().sum(dim=1)
