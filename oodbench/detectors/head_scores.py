"""Feature scores that read the linear head (W, b) beside the penultimate features f: GradNorm, fDBD, NCI, SHE.

Logits are z = f Wᵀ + b (``linear_params``), ŷ = argmax_c z_c; everything is computed in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from oodbench.detectors.base import FeatureDetector, FitData
from oodbench.detectors.logit_scores import check_positive
from oodbench.detectors.shaping import Head, linear_params
from oodbench.errors import OodbenchError


def affine(features: Tensor, head: Head) -> tuple[Tensor, Tensor, Tensor]:
    """(f, W, z) in float64: the features as (N, D), the head's weight (C, D) and the logits f Wᵀ + b."""
    flat = features.reshape(len(features), -1)
    f = flat.double()
    w, b = (t.double().to(f.device) for t in linear_params(head, flat))  # probed, if need be, in the head's dtype
    return f, w, f @ w.T + b


class _FitsMean(FeatureDetector):
    """Fits μ, the mean ID-train feature (fDBD's μ_train, NCI's global mean μ_G)."""

    needs_fit = True

    def fit(self, data: FitData) -> None:
        self._mean = data.features.reshape(len(data.features), -1).double().mean(0)

    def centered(self, f: Tensor) -> Tensor:
        if not hasattr(self, "_mean"):
            raise OodbenchError(f"{type(self).__name__} must be fit on ID training features before scoring (call fit)")
        return f - self._mean.to(f.device)


class GradNorm(FeatureDetector):
    """GradNorm (Huang, Geng & Li, NeurIPS 2021): the L1 norm of the gradient, w.r.t. the last layer's weight W only,
    of the loss L = Σ_c −log softmax(z/T)_c between the uniform target and the softmax — the official code's
    ``iterate_data_gradnorm`` in deeplearning-wisc/gradnorm_ood test_ood.py (targets = ones, summed over classes,
    batch of one, ``model.head.conv.weight.grad``, T = ``--temperature_gradnorm`` 1), which is C·(KL(u ‖ softmax(z/T))
    + log C). For a linear head ∂L/∂z_c = (C·p_c − 1)/T with p = softmax(z/T), and ∂L/∂W_cj = (C·p_c − 1)·f_j/T, so

        S(x) = ‖∂L/∂W‖₁ = (1/T) · Σ_c |C·p_c − 1| · Σ_j |f_j| = (C/T) · ‖p − 1/C‖₁ · ‖f‖₁,

    computed from the cached features and the head, no backward pass. Higher = more in-distribution, as in the paper."""

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = check_positive("GradNorm temperature", temperature)

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        f, _, z = affine(features, head)
        p = torch.softmax(z / self.temperature, dim=1)
        return (z.shape[1] * p - 1).abs().sum(1) * f.abs().sum(1) / self.temperature


class FDBD(_FitsMean):
    """fast Decision Boundary Distance, fDBD (Liu & Qin, ICML 2024): the distance of f to the decision boundary
    between ŷ and each other class c, |(w_ŷ − w_c)ᵀ f + (b_ŷ − b_c)| / ‖w_ŷ − w_c‖₂, averaged over the C − 1 classes
    c ≠ ŷ and divided by ‖f − μ_train‖₂ (μ_train = mean ID-train feature):

        S(x) = 1/(C − 1) · Σ_{c≠ŷ} |z_ŷ − z_c| / ‖w_ŷ − w_c‖₂ / ‖f − μ_train‖₂.

    Hyper-parameter free. The official litianliu/fDBD-OOD run_cifar.py sums instead of averaging (a constant C − 1)."""

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        f, w, z = affine(features, head)
        top, pred = z.max(dim=1)
        gaps = torch.cdist(w, w)[pred]  # ‖w_ŷ − w_c‖, (N, C)
        gaps[torch.arange(len(pred)), pred] = 1.0  # the c = ŷ term is 0 / 1
        dist = ((top[:, None] - z).abs() / gaps).sum(1) / (z.shape[1] - 1)
        return dist / self.centered(f).norm(dim=1).clamp_min(torch.finfo(torch.float64).tiny)


class NCI(_FitsMean):
    """Neural-collapse inspired score, NCI (Liu & Qin, CVPR 2025): proximity of the centered feature to the predicted
    class's weight vector plus an L1 feature-norm term,

        S(x) = w_ŷᵀ (f − μ_G) / ‖f − μ_G‖₂ + α · ‖f‖₁,   μ_G = mean ID-train feature,

    the exact form of the official litianliu/NCI-OOD openood/postprocessors/nci_postprocessor.py (w_ŷ not normalized).
    α: configs/postprocessors/nci.yml there sets 1e-4 (and sweeps 1e-4, 1e-3, 1e-2, 0.1 on a validation split)."""

    def __init__(self, alpha: float = 1e-4) -> None:
        if not alpha >= 0:
            raise OodbenchError(f"NCI alpha must be >= 0 (weight of the L1 feature norm), got {alpha}")
        self.alpha = float(alpha)

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        f, w, z = affine(features, head)
        c = self.centered(f)
        return (w[z.argmax(dim=1)] * c).sum(1) / c.norm(dim=1) + self.alpha * f.abs().sum(1)


class SHE(FeatureDetector):
    """Simplified Hopfield energy, SHE (Zhang et al., ICLR 2023): stored patterns S_c = mean penultimate feature of the
    ID-train images of class c that the network classifies correctly; S(x) = f · S_ŷ (``metric="inner_product"``,
    the default of the official zjs975584714/SHE_ood_detection test_score_ood_detection.py ``--metric``; its
    ablations ``euclidean_distance``: −‖f − S_ŷ‖₂ and ``cos_similarity``: cos(f, S_ŷ) are available too). Patterns:
    that repository's generate_stored_pattern.py ``generate_avg_feature``."""

    needs_fit = True
    METRICS = ("inner_product", "euclidean_distance", "cos_similarity")

    def __init__(self, metric: str = "inner_product") -> None:
        if metric not in self.METRICS:
            raise OodbenchError(f"SHE metric must be one of {', '.join(self.METRICS)}, got {metric!r}")
        self.metric = metric

    def fit(self, data: FitData) -> None:
        f, _, z = affine(data.features, data.head)
        y = data.labels.to(f.device).long()
        ok = z.argmax(dim=1) == y
        missing = [c for c in range(z.shape[1]) if not bool((ok & (y == c)).any())]
        if missing:
            raise OodbenchError(f"SHE needs a correctly classified ID-train image of every class; none for class(es) "
                                f"{missing[:10]} in {len(f)} fit images: fit on more images")
        self._patterns = torch.stack([f[ok & (y == c)].mean(0) for c in range(z.shape[1])])

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        if not hasattr(self, "_patterns"):
            raise OodbenchError("SHE must be fit on labelled ID training features before scoring (call fit)")
        f, _, z = affine(features, head)
        s = self._patterns.to(f.device)[z.argmax(dim=1)]
        if self.metric == "inner_product":
            return (f * s).sum(1)
        if self.metric == "euclidean_distance":
            return -(f - s).norm(dim=1)
        return F.cosine_similarity(f, s, dim=1)
