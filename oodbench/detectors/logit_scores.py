"""Scores computed from logits alone (MSP, Energy, MaxLogit, Entropy, GEN; fitted on ID-train logits:
temperature scaling, KL matching)."""

from __future__ import annotations

import math

import torch

from oodbench.detectors.base import FitData, LogitDetector
from oodbench.errors import OodbenchError


class MSP(LogitDetector):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017): S(x) = max_i softmax(f(x))_i."""

    def metric_hints(self) -> dict[str, float]:
        return {"softmax_temperature": 1.0}

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.double(), dim=1).max(dim=1).values


class Energy(LogitDetector):
    """Negative free energy (Liu et al., NeurIPS 2020, Eq. 4): −E(x; f) = T · log Σ_i exp(f_i(x) / T)."""

    def __init__(self, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"energy temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return t * torch.logsumexp(logits.double() / t, dim=1)


class MaxLogit(LogitDetector):
    """Maximum logit (Hendrycks et al., ICML 2022): S(x) = max_i f_i(x)."""

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.double().max(dim=1).values


def _probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.double(), dim=1)


def check_positive(what: str, value: float) -> float:
    if not value > 0:
        raise OodbenchError(f"{what} must be > 0, got {value}")
    return float(value)


class Entropy(LogitDetector):
    """Negative predictive entropy: S(x) = −H(p) = Σ_i p_i log p_i, p = softmax(f(x)) (log p by log-softmax in
    float64, so no clipping)."""

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits.double(), dim=1)
        return (log_p.exp() * log_p).sum(dim=1)


class GEN(LogitDetector):
    """Generalized entropy (Liu, Lochman & Zach, CVPR 2023): over the M largest softmax probabilities
    p_(1) ≥ … ≥ p_(M) of p = softmax(f(x)), G_γ(p) = Σ_{j≤M} p_(j)^γ (1 − p_(j))^γ; score S(x) = −G_γ(p) (the
    paper's G is higher for OOD). M is capped at C. Defaults γ = 0.1, M = 100: the official code's
    ``benchmark.py`` (``--gamma``, ``--M``; XixiLiu95/GEN), which also sums (no mean) and does not clip p."""

    def __init__(self, gamma: float = 0.1, M: int = 100) -> None:  # M: the paper's and the official code's name
        self.gamma = check_positive("GEN gamma", gamma)
        if int(M) != M or M < 1:
            raise OodbenchError(f"GEN M must be an integer >= 1 (top-M classes), got {M}")
        self.M = int(M)

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        p = _probs(logits)
        top = p.topk(min(self.M, p.shape[1]), dim=1).values
        return -(top.pow(self.gamma) * (1 - top).pow(self.gamma)).sum(dim=1)


class TemperatureScaling(LogitDetector):
    """Temperature scaling (Guo, Pleiss, Sun & Weinberger, ICML 2017): one T > 0 minimizing the negative
    log-likelihood NLL(T) = −1/N Σ_i log softmax(z_i / T)_{y_i} on labelled ID logits (``FitData.logits``/``labels``);
    score S(x) = max_i softmax(f(x) / T)_i. NLL is convex in β = 1/T (dNLL/dβ = mean_i Σ_c p_ic (z_ic − z_iy),
    increasing), so T is found to float64 precision by bisection on that derivative over T ∈ [1e-3, 1e3] (the paper's
    code, gpleiss/temperature_scaling, runs 50 L-BFGS steps from T = 1.5 instead). ``temperature`` in the row says
    which T was used.

    The paper fits T on a held-out validation split. On images the network classifies without error the NLL has no
    minimizer (it falls as T → 0, and max softmax(z/T) → 1 for every input): fitting then fails with an error rather
    than return a degenerate score. Training images usually are such images: DICE's CIFAR-10 DenseNet classifies all
    of the first 1,000 exact CIFAR-10 training images correctly (T = 1e-3, the bound, gave AUROC 50.7 % for 300 CIFAR-10
    test vs 300 iSUN images: every score saturates at 1)."""

    needs_fit = True
    BOUNDS = (1e-3, 1e3)

    def __init__(self) -> None:
        self._temperature: float | None = None

    def fit(self, data: FitData) -> None:
        z, y = data.logits.double(), data.labels.to(data.logits.device).long()
        if len(z) == 0 or len(z) != len(y):
            raise OodbenchError("TemperatureScaling needs one label per ID-train logit row")
        gap = z - z.gather(1, y[:, None])  # z_c − z_y, so the slope has no cancellation

        def slope(log_beta: float) -> float:  # dNLL/dβ = mean_i Σ_c p_ic (z_ic − z_iy), increasing in β
            return float((torch.softmax(z * math.exp(log_beta), dim=1) * gap).sum(1).mean())

        lo, hi = -math.log(self.BOUNDS[1]), -math.log(self.BOUNDS[0])  # log β range
        s_lo, s_hi = slope(lo), slope(hi)
        if s_hi <= 0 or s_lo >= 0:  # 0: saturated softmax, the NLL is flat from there on
            wrong = int((gap > 0).any(1).sum())
            why = "it falls as T → 0" if s_lo < 0 else "it falls as T → ∞" if s_hi > 0 else "it does not depend on T"
            raise OodbenchError(
                f"TemperatureScaling: the NLL of {data.source} has no minimizer in T ∈ [{self.BOUNDS[0]:g}, "
                f"{self.BOUNDS[1]:g}] ({why}; {wrong} of {len(z)} images misclassified): fit it on held-out labelled "
                "ID data, as the paper does")
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
        self._temperature = math.exp(-(lo + hi) / 2)

    @property
    def temperature(self) -> float:
        if self._temperature is None:
            raise OodbenchError("TemperatureScaling must be fit on labelled ID logits before scoring (call fit)")
        return self._temperature

    def metric_hints(self) -> dict[str, float]:
        return {"softmax_temperature": self.temperature} if self._temperature is not None else {}

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.double() / self.temperature, dim=1).max(dim=1).values

    @property
    def params(self) -> dict:
        return {"temperature": self._temperature}


class KLMatching(LogitDetector):
    """KL matching (Hendrycks, Basart, Mazeika et al., ICML 2022): templates d_k = mean of p = softmax(f(x')) over
    the ID fit images x' *predicted* as k (no labels needed); S(x) = −min_k KL[p(x) ‖ d_k], the minimum over the
    classes predicted at least once (an empty class's template would give KL = ∞). Templates from the ID-train
    logits (``FitData.logits``), as method ``KL-Matching`` of haoqiwang/vim benchmark.py (the paper describes a
    validation split)."""

    needs_fit = True

    def fit(self, data: FitData) -> None:
        p = _probs(data.logits)
        pred = p.argmax(dim=1)
        self._templates = torch.stack([p[pred == k].mean(0) for k in pred.unique()])

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "_templates"):
            raise OodbenchError("KLMatching must be fit on ID logits before scoring (call fit)")
        log_p = torch.log_softmax(logits.double(), dim=1)
        p = log_p.exp()
        # an underflowed template entry (d = 0) gets the most negative finite log, so p = 0 there adds 0, not nan
        log_d = self._templates.to(p.device).log().clamp_min(torch.finfo(torch.float64).min)
        kl = (p * log_p).sum(1, keepdim=True) - p @ log_d.T  # KL[p ‖ d_k] for every k, (N, K)
        return -kl.min(dim=1).values
