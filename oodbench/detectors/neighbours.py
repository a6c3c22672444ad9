"""Scores from a bank of ID-train features: NNGuide (energy-guided nearest neighbours) and Relation (kernel
similarity). Banks hold L2-normalized features f̂ = f/‖f‖ in float32, like :class:`~oodbench.detectors.KNN`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from oodbench.detectors.base import FeatureDetector, FitData
from oodbench.detectors.logit_scores import check_positive
from oodbench.detectors.shaping import Head, linear_params
from oodbench.errors import OodbenchError


def _logits(features: Tensor, head: Head) -> Tensor:
    w, b = linear_params(head, features)
    return features.double() @ w.double().T.to(features.device) + b.double().to(features.device)


def _chunks(features: Tensor, chunk: int) -> list[Tensor]:
    return list(features.reshape(len(features), -1).split(chunk))


class NNGuide(FeatureDetector):
    """Nearest-neighbour guidance, NNGuide (Park, Jung & Teoh, ICCV 2023): bank B = {E(z) · f̂(z)} over ID-train
    images z, E = logsumexp of the logits (energy, the classifier's confidence); guidance G(x) = mean of the k
    largest inner products f̂(x) · B_i; score S(x) = G(x) · E(x). Exact form: roomo7time/nnguide
    ood_detectors/nnguide.py (``knn_k`` default 10 there and in conf/detector/nnguide.yaml; features normalized in
    model_engines/assets.py, logits from the raw features). ``bank_fraction`` < 1 keeps a seeded random subset of
    the fit images (the official code banks 1 % of ImageNet train: dataloaders/factory.py ``bankset_ratio=0.01``)."""

    needs_fit = True

    def __init__(self, k: int = 10, bank_fraction: float = 1.0, seed: int = 0, chunk: int = 1024) -> None:
        if int(k) != k or k < 1:
            raise OodbenchError(f"NNGuide k must be an integer >= 1, got {k}")
        if not 0 < bank_fraction <= 1:
            raise OodbenchError(f"NNGuide bank_fraction must be in (0, 1], got {bank_fraction}")
        self.k, self.bank_fraction, self.seed, self._chunk = int(k), float(bank_fraction), int(seed), int(chunk)

    def fit(self, data: FitData) -> None:
        f = data.features.reshape(len(data.features), -1)
        if self.bank_fraction < 1:
            n = max(1, round(self.bank_fraction * len(f)))
            f = f[torch.randperm(len(f), generator=torch.Generator().manual_seed(self.seed))[:n].sort().values]
        if len(f) < self.k:
            raise OodbenchError(f"NNGuide k={self.k} exceeds the {len(f)} bank features; lower k or raise "
                                "bank_fraction")
        energy = torch.logsumexp(_logits(f, data.head), dim=1)
        self._bank = (F.normalize(f.double(), dim=1) * energy[:, None]).float()

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        if not hasattr(self, "_bank"):
            raise OodbenchError("NNGuide must be fit on ID training features before scoring (call fit)")
        bank = self._bank.to(features.device)
        guidance = torch.cat([(F.normalize(c.float(), dim=1) @ bank.T).topk(self.k, dim=1).values.double().mean(1)
                              for c in _chunks(features, self._chunk)])
        return guidance * torch.logsumexp(_logits(features.reshape(len(features), -1), head), dim=1)


class Relation(FeatureDetector):
    """Relation (Kim, Yun & Song, NeurIPS 2023, "Neural Relation Graph"), OOD score of x against the ID-train bank:
    kernel k(x, x_i) = max(0, f̂(x) · f̂(x_i)) · (p(x) · p(x_i)) (``kernel="cos_p"``, p = softmax of the logits;
    ``"cos"`` drops the probability term), edges with k ≤ ``threshold`` cut, and S(x) = Σ_i k(x, x_i)^power.
    Exact form and defaults: snu-mllab/Neural-Relation-Graph relation.py (``kernel``, ``get_relation``:
    ``thres=0.03``), argument.py (``--kernel cos_p``) and readme.md's OOD command ``detect_ood.py --pow 1``
    (detect_ood.py warns that another power "is not optimal for OOD detection"). The official OOD score is
    1/(S + 1e-6), higher = OOD; S ≥ 0 ranks the same way, reversed."""

    needs_fit = True
    KERNELS = ("cos_p", "cos")

    def __init__(self, power: float = 1, threshold: float = 0.03, kernel: str = "cos_p", chunk: int = 256) -> None:
        self.power = check_positive("Relation power", power)
        if not threshold >= 0:
            raise OodbenchError(f"Relation threshold must be >= 0 (edges at or below it are cut), got {threshold}")
        if kernel not in self.KERNELS:
            raise OodbenchError(f"Relation kernel must be one of {', '.join(self.KERNELS)}, got {kernel!r}")
        self.threshold, self.kernel, self._chunk = float(threshold), kernel, int(chunk)

    def fit(self, data: FitData) -> None:
        f = data.features.reshape(len(data.features), -1)
        self._bank = F.normalize(f.float(), dim=1)
        self._probs = torch.softmax(_logits(f, data.head), dim=1).float()

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        if not hasattr(self, "_bank"):
            raise OodbenchError("Relation must be fit on ID training features before scoring (call fit)")
        bank, probs = self._bank.to(features.device), self._probs.to(features.device)
        out = []
        for c in _chunks(features, self._chunk):
            rel = (F.normalize(c.float(), dim=1) @ bank.T).clamp_min(0)
            if self.kernel == "cos_p":
                rel = rel * (torch.softmax(_logits(c, head), dim=1).float() @ probs.T)
            rel = rel.double()
            out.append(torch.where(rel > self.threshold, rel, torch.zeros_like(rel)).pow(self.power).sum(1))
        return torch.cat(out)
