"""Maximum Classifier Discrepancy (Yu & Aizawa, ICCV 2019), test time.

A two-head network (trained with ``python train.py method=mcd``) scores an input by the L1 distance between its
heads' softmax outputs, sum_c |p1_c(x) - p2_c(x)|, which is large for OOD inputs. oodbench's convention is
higher = more in-distribution, so the score is the negative distance.
"""

from __future__ import annotations

import torch
from torch import nn

from oodbench.detectors.base import FeatureDetector
from oodbench.train.losses import mcd_score
from oodbench.train.mcd_model import both_heads


class MCDDiscrepancy(FeatureDetector):
    """S(x) = -|| softmax(F1(h(x))) - softmax(F2(h(x))) ||_1 from penultimate features h(x)."""

    def score_features(self, features: torch.Tensor, head: nn.Module) -> torch.Tensor:
        logits1, logits2 = both_heads(head).both(features)
        return -mcd_score(logits1.double(), logits2.double())
