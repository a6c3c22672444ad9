"""Activation shaping composed with any logit score (ASH, ReAct, DICE, SCALE, VRA).

Each detector reshapes the penultimate features (or the last layer's weights), recomputes the logits and
hands them to ``score`` (any :class:`LogitDetector`; Energy by default, as in the three papers), so e.g.
``ASH(variant="s", p=90, score=MSP())`` is ASH-S followed by the maximum softmax probability.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from oodbench.data.files import sha256_file
from oodbench.detectors.base import CheckpointReference, FeatureDetector, FitData, LogitDetector
from oodbench.detectors.logit_scores import Energy
from oodbench.errors import OodbenchError

Head = Callable[[Tensor], Tensor]


def _find_linear(head: Head) -> nn.Linear | None:
    owner = getattr(head, "__self__", head)  # a bound ``Classifier.head`` / ``OODNet.head`` → its module
    cands = (owner, getattr(owner, "fc", None), getattr(getattr(owner, "net", None), "fc", None))
    return next((c for c in cands if isinstance(c, nn.Linear)), None)


def linear_params(head: Head, like: Tensor) -> tuple[Tensor, Tensor]:
    """(W, b) of an affine head on features shaped like ``like`` (N, D), logits = f Wᵀ + b: from its ``nn.Linear``
    if found, else probed with unit vectors; checked against ``head`` on random inputs (OodbenchError if not)."""
    lin, dim = _find_linear(head), like.shape[1]
    with torch.no_grad():
        if lin is not None:
            w = lin.weight.detach()
            b = lin.bias.detach() if lin.bias is not None else torch.zeros(w.shape[0], device=w.device)
        else:
            b = head(torch.zeros(1, dim, dtype=like.dtype, device=like.device))[0]
            w = (head(torch.eye(dim, dtype=like.dtype, device=like.device)) - b).T.contiguous()
        x = torch.rand(4, dim, generator=torch.Generator().manual_seed(0)).to(w.device, w.dtype)
        if w.shape[1] != dim or not torch.allclose(head(x), x @ w.T + b, rtol=1e-4, atol=1e-4):
            raise OodbenchError(f"this detector needs a linear classifier head on {dim}-d features; the model's "
                                "head is not one (or does not take features of that size)")
    return w, b


class Shaped(FeatureDetector):
    """Base of the shaping detectors: ``score_features(f, head) = score.score_logits(logits(f, head))`` with
    ``logits(f, head) = head(shape(f))``; subclasses override :meth:`shape` (or :meth:`logits`)."""

    def __init__(self, score: LogitDetector | None = None) -> None:
        self.score = score if score is not None else Energy()
        if getattr(self.score, "consumes", "logits") != "logits":  # e.g. ODIN with ε > 0
            raise OodbenchError(f"{self.score} perturbs the input and cannot score shaped logits; use epsilon=0")

    def shape(self, features: Tensor) -> Tensor:
        return features

    def logits(self, features: Tensor, head: Head) -> Tensor:
        return head(self.shape(features))

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        return self.score.score_logits(self.logits(features, head))

    def metric_hints(self) -> dict[str, float]:
        return self.score.metric_hints()  # the shaped logits are scored by ``score``

    @property
    def params(self) -> dict:
        return {**super().params, "score": repr(self.score)}


def _check_percent(name: str, value: float) -> float:
    if not 0 < value < 100:
        raise OodbenchError(f"{name} must be a percentile strictly between 0 and 100, got {value}")
    return float(value)


def kept_count(n: int, p: float) -> int:
    """How many of n values survive pruning at percentile p: n − round(n·p/100) (the ASH paper's code)."""
    return n - round(n * p / 100)


def sharpening(flat: Tensor, kept: Tensor) -> Tensor:
    """ASH-S's per-sample factor exp(s1/s2), (N, 1) float64: s1 = Σ of all activations of a row of ``flat``, s2 = Σ of
    its ``kept`` (top-k) ones; 1 where s2 = 0."""
    s1, s2 = flat.double().sum(1, keepdim=True), kept.double().sum(1, keepdim=True)
    return torch.exp(torch.where(s2 > 0, s1 / s2.clamp_min(1e-300), torch.zeros_like(s1)))


class ASH(Shaped):
    """Activation SHaping (Djurisic et al., ICLR 2023, Alg. 1-3 and ASH-RAND), per sample on the penultimate
    vector a (non-negative, post-ReLU): keep the k largest entries, k = D − round(D·p/100) as in the paper's
    code (exactly k are kept; among values tied at the threshold, ``torch.topk`` decides), zero the rest.
    ASH-P keeps them as they are; ASH-B sets each to s1/k (s1 = Σa before pruning); ASH-S multiplies them
    by exp(s1/s2) (s2 = Σ after pruning; factor 1 when s2 = 0); ASH-RAND replaces them by U(0, 10) draws
    from a generator seeded with ``seed`` at every call. The paper shapes the pre-pooling map of ImageNet
    ResNets; here, as in its CIFAR DenseNet code, the pooled penultimate vector."""

    def __init__(self, variant: str = "p", p: float = 90, score: LogitDetector | None = None,
                 seed: int = 0) -> None:
        super().__init__(score)
        if variant not in ("p", "b", "s", "rand"):
            raise OodbenchError(f"ASH variant must be one of p, b, s, rand; got {variant!r}")
        self.variant, self.p, self.seed = variant, _check_percent("ASH p", p), int(seed)

    def shape(self, features: Tensor) -> Tensor:
        flat = features.reshape(len(features), -1)
        n, k = flat.shape[1], kept_count(flat.shape[1], self.p)
        if k < 1:
            raise OodbenchError(f"ASH p={self.p} keeps no activation of {n}; use a smaller p")
        if bool((flat < 0).any()):
            warnings.warn("ASH expects non-negative (post-ReLU) features; got negative values", stacklevel=3)
        vals, idx = flat.topk(k, dim=1)
        if self.variant == "b":
            vals = (flat.sum(1, keepdim=True) / k).expand_as(vals)
        elif self.variant == "s":
            vals = (vals.double() * sharpening(flat, vals)).to(flat.dtype)
        elif self.variant == "rand":
            gen = torch.Generator().manual_seed(self.seed)
            vals = (10 * torch.rand(vals.shape, generator=gen, dtype=flat.dtype)).to(flat.device)
        return torch.zeros_like(flat).scatter(1, idx, vals).reshape(features.shape)


class ReAct(Shaped):
    """Rectified activations (Sun, Guo & Li, NeurIPS 2021, Eq. 1-2): c = the ``percentile``-th percentile of
    all ID-train penultimate activation values (numpy's linear interpolation, as the paper's code), then
    logits = head(min(f, c))."""

    needs_fit = True

    def __init__(self, percentile: float = 90, score: LogitDetector | None = None) -> None:
        super().__init__(score)
        self.percentile = _check_percent("ReAct percentile", percentile)
        self._threshold: float | None = None

    def fit(self, data: FitData) -> None:
        self._threshold = float(np.percentile(data.features.float().cpu().numpy().ravel(), self.percentile))

    def shape(self, features: Tensor) -> Tensor:
        if self._threshold is None:
            raise OodbenchError("ReAct must be fit on ID training features before scoring (call fit)")
        return features.clamp(max=self._threshold)

    @property
    def params(self) -> dict:
        return {**super().params, "threshold": self._threshold}


class SCALE(Shaped):
    """SCALE (Xu, Chen, Franchi & Yao, ICLR 2024): ASH-S's scaling without its pruning. Per sample on the penultimate
    vector a (non-negative): k = D − round(D·p/100), s1 = Σ_j a_j, s2 = Σ of the k largest a_j, and the *unpruned*
    vector is scaled, a' = a · exp(s1/s2); logits = head(a'), then ``score`` (Energy, as the official
    ``ScalePostprocessor``). Exact form: ``scale()`` in kai422/SCALE openood/networks/scale_net.py.

    p: kai422/SCALE configs/postprocessors/scale.yml sets 85 and sweeps it on OpenOOD's validation split (APS);
    the fitted postprocessors the authors published pick 65 for CIFAR-10 and CIFAR-100 (ResNet-18, all three seeds:
    results/cifar{10,100}_resnet18_32x32_base_e100_lr0.1_default/s*/postprocessors/scale.pkl) and 85 for ImageNet
    (results/imagenet_resnet50_tvsv1_base_default/postprocessors/scale.pkl)."""

    def __init__(self, p: float = 65, score: LogitDetector | None = None) -> None:
        super().__init__(score)
        self.p = _check_percent("SCALE p", p)

    def shape(self, features: Tensor) -> Tensor:
        flat = features.reshape(len(features), -1)
        k = kept_count(flat.shape[1], self.p)
        if k < 1:
            raise OodbenchError(f"SCALE p={self.p} leaves no activation of {flat.shape[1]} for s2; use a smaller p")
        if bool((flat < 0).any()):
            warnings.warn("SCALE expects non-negative (post-ReLU) features; got negative values", stacklevel=3)
        factor = sharpening(flat, flat.topk(k, dim=1).values)
        return (flat.double() * factor).to(flat.dtype).reshape(features.shape)


class VRA(Shaped):
    """Variational rectified activation (Xu, Lian, Liu & Tao, NeurIPS 2023), the piecewise rectifier
    g_j(z) = 0 if z < α_j;  z + γ if α_j ≤ z ≤ β_j;  β_j if z > β_j
    on each penultimate unit j (γ = 0: VRA; γ > 0: VRA+), then logits = head(g(f)) and ``score`` (Energy, the
    official ``--method energy``). α_j, β_j = the ``low``-th / ``high``-th percentile of unit j over the ID-train
    features (linear interpolation, per unit: ``torch.quantile(feat, q, dim=0)`` in zeroQiaoba/VRA ood_eval.py
    ``--q1/--q2``; the rule is models/densenet.py ``case == 'clip2'``, γ = ``--lamb``).

    Defaults: the official readme.md's CIFAR-10 VRA+ command (``--q1 0.6 --q2 0.95 --lamb 0.6``, energy); its
    CIFAR-100 command uses the same thresholds with ODIN (T = 1000, ε = 0.004), which needs the network."""

    needs_fit = True

    def __init__(self, low: float = 60, high: float = 95, gamma: float = 0.6,
                 score: LogitDetector | None = None) -> None:
        super().__init__(score)
        self.low, self.high = _check_percent("VRA low", low), _check_percent("VRA high", high)
        if not self.low < self.high:
            raise OodbenchError(f"VRA low must be below high (percentiles), got low={low}, high={high}")
        if not gamma >= 0:
            raise OodbenchError(f"VRA gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self._bounds: tuple[Tensor, Tensor] | None = None

    def fit(self, data: FitData) -> None:
        f = data.features.reshape(len(data.features), -1).double().cpu().numpy()
        lo, hi = np.percentile(f, [self.low, self.high], axis=0)
        self._bounds = torch.from_numpy(lo), torch.from_numpy(hi)

    def shape(self, features: Tensor) -> Tensor:
        if self._bounds is None:
            raise OodbenchError("VRA must be fit on ID training features before scoring (call fit)")
        flat = features.reshape(len(features), -1)
        if flat.shape[1] != len(self._bounds[0]):
            raise OodbenchError(f"VRA was fit on {len(self._bounds[0])}-d features, got {flat.shape[1]}-d ones")
        lo, hi = (t.to(flat.device, flat.dtype) for t in self._bounds)
        out = torch.where(flat > hi, hi, flat + self.gamma)
        return torch.where(flat < lo, torch.zeros_like(flat), out).reshape(features.shape)


class DICE(Shaped):
    """Directed sparsification (Sun & Li, ECCV 2022, Eq. 3-5): contributions V = W ⊙ m̄ (m̄ = mean ID-train
    feature, V_cj = W_cj·m̄_j); the mask M keeps the largest k = C·D − round(C·D·p/100) of V over the whole
    matrix (``torch.topk``; the paper's code keeps V > numpy-percentile(V, p), which can differ by one weight
    at ties); logits = f (M ⊙ W)ᵀ + b.

    m̄ (``feature_stats``): null or ``auto`` (default) = the checkpoint authors' published mean over the full
    training set when the registry names one (DICE's ``*_feat_stat.npy``, as the official code loads), else the
    mean of the ID-train split fitted here; ``fit`` = always fit here; a ``.npy`` path = that file (a relative
    path is looked up in the run's weights directory, ``paths.weights``). ``mean_feature`` in the row says
    which was used; a file's sha256 is part of the result's identity (``inputs``)."""

    def __init__(self, p: float = 90, score: LogitDetector | None = None,
                 feature_stats: str | None = None) -> None:
        super().__init__(score)
        self.p, self.feature_stats = _check_percent("DICE p", p), feature_stats
        self.mean_feature = "fit on the ID-train split"
        self._mean: Tensor | None = None
        self._inputs: dict[str, str] = {}

    def bind(self, ref: CheckpointReference) -> None:
        if self.feature_stats == "fit":
            return
        if self.feature_stats in (None, "", "auto"):
            if ref.mean_feature is None:
                return
            path, where = ref.mean_feature, f"; get it from {ref.mean_feature_source} or set detector.feature_stats=fit"
        else:
            path = Path(str(self.feature_stats)).expanduser()
            path, where = (path if path.is_absolute() else ref.weights_dir / path), "; give an existing .npy path"
        if not path.is_file():
            raise OodbenchError(f"DICE feature_stats file not found: {path}{where}")
        self._mean = torch.from_numpy(np.load(path).astype(np.float64).ravel())
        sha = sha256_file(path)
        self.mean_feature, self._inputs = f"{path.name} (sha256 {sha[:12]})", {"dice_mean_feature": sha}

    def inputs(self) -> dict[str, str]:
        return dict(self._inputs)

    @property
    def needs_fit(self) -> bool:  # type: ignore[override]
        return self._mean is None

    def fit(self, data: FitData) -> None:
        if self._mean is None:
            self._mean = data.features.double().mean(0).cpu()
            self.mean_feature = f"fit on {data.source}"

    def mask(self, weight: Tensor) -> Tensor:
        """Boolean (C, D) mask M of the weights DICE keeps."""
        if self._mean is None:
            raise OodbenchError("DICE needs the mean ID-train feature: fit it or give feature_stats")
        if self._mean.numel() != weight.shape[1]:
            raise OodbenchError(f"DICE feature stats are {self._mean.numel()}-d but the head takes "
                                f"{weight.shape[1]}-d features; use the stats of this checkpoint")
        contrib = (weight.double().cpu() * self._mean[None, :]).ravel()
        k = kept_count(contrib.numel(), self.p)
        if k < 1:
            raise OodbenchError(f"DICE p={self.p} keeps no weight of {contrib.numel()}; use a smaller p")
        keep = torch.zeros_like(contrib, dtype=torch.bool)
        keep[contrib.topk(k).indices] = True
        return keep.view(weight.shape).to(weight.device)

    def logits(self, features: Tensor, head: Head) -> Tensor:
        w, b = linear_params(head, features)
        return features @ (w * self.mask(w)).T.to(features.dtype) + b.to(features.dtype)


class Chain(FeatureDetector):
    """Feature shapers applied in order, then any feature detector on the shaped features — activation shaping
    as composable steps (oodeel style): ReAct then DICE (``detector=react_dice``), ReAct then KNN
    (``detector=react_knn``), ASH then ViM, ... Each step fits on the ID-train features shaped by the steps
    before it; ``then`` scores the shaped features (with its own logit score where it has one)."""

    def __init__(self, shapers: Sequence[Shaped], then: FeatureDetector) -> None:
        for step in shapers:
            if not isinstance(step, Shaped) or type(step).shape is Shaped.shape:
                raise OodbenchError(f"{type(step).__name__} does not shape the features (e.g. DICE reshapes the last "
                                    "layer): use it as the final step, then=...")
        if not isinstance(then, FeatureDetector):
            raise OodbenchError(f"a shaping chain ends in a feature detector, not {type(then).__name__}")
        self.shapers, self.then = list(shapers), then

    def bind(self, ref: CheckpointReference) -> None:
        for step in (*self.shapers, self.then):
            step.bind(ref)

    def inputs(self) -> dict[str, str]:
        return {k: v for step in (*self.shapers, self.then) for k, v in step.inputs().items()}

    @property
    def needs_fit(self) -> bool:  # type: ignore[override]
        return any(s.needs_fit for s in self.shapers) or self.then.needs_fit

    def fit(self, data: FitData) -> None:
        feats = data.features
        for step in self.shapers:
            if step.needs_fit:
                step.fit(replace(data, features=feats))
            feats = step.shape(feats)
        if self.then.needs_fit:
            self.then.fit(replace(data, features=feats))

    def shape(self, features: Tensor) -> Tensor:
        for step in self.shapers:
            features = step.shape(features)
        return features

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        return self.then.score_features(self.shape(features), head)

    def metric_hints(self) -> dict[str, float]:
        return self.then.metric_hints()

    @property
    def params(self) -> dict:
        return {"shapers": [repr(s) for s in self.shapers], "then": repr(self.then)}
