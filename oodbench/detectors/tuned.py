"""ODIN and Mahalanobis tuned per OOD set on a validation split: Lee et al. (NeurIPS 2018), Table 2, left half.

Protocol of the official code (deep_Mahalanobis_detector: ``OOD_Baseline_and_ODIN.py``,
``OOD_Generate_Mahalanobis.py``, ``OOD_Regression_Mahalanobis.py``, ``lib_generation.py``):

* ODIN: (T, ε) over T ∈ {1, 10, 100, 1000} × ε ∈ {0, 0.0005, 0.001, 0.0014, 0.002, 0.0024, 0.005, 0.01, 0.05,
  0.1, 0.2} (the baseline T = 1, ε = 0 excluded), chosen by TNR at 95 % TPR on the validation images (T outer, ε
  inner, the first best kept).
* Mahalanobis: per layer l (DenseNet: conv1, trans1, trans2, final, each averaged over H × W) class means and one
  tied covariance from ID train, inverted with sklearn's ``EmpiricalCovariance().precision_`` (a pseudo-inverse);
  M_l(x) = max_c −½ (f_l(x) − μ_{l,c})ᵀ Σ_l⁺ (f_l(x) − μ_{l,c}) (Eq. 2); x̃ = x − ε·sign(∇ₓ ½ d²_{l,ĉ}(x))
  (Eq. 4); for each noise ε ∈ {0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005} a logistic regression
  (``LogisticRegressionCV``, raw layer scores) is fit on the first half of the validation images of each side and
  scored by TNR at 95 % TPR on the second half; the best ε and its regression score the test images.

Every ε costs one forward: the gradient sign at x is shared by the whole grid (:mod:`gradient_grid`).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oodbench.data.base import ImageSet
from oodbench.detectors.base import FitData, ModelDetector, PerSetData
from oodbench.detectors.gradient_grid import grid_scores, signed_gradient
from oodbench.detectors.odin import ODIN
from oodbench.errors import OodbenchError

ODIN_TEMPERATURES = (1.0, 10.0, 100.0, 1000.0)
ODIN_EPSILONS = (0.0, 0.0005, 0.001, 0.0014, 0.002, 0.0024, 0.005, 0.01, 0.05, 0.1, 0.2)
MAHALANOBIS_NOISES = (0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005)
D = TypeVar("D", bound=ModelDetector)


def tnr_at_tpr95(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """The official validation criterion (``calculate_log.get_curve``): walk the pooled scores upwards (ID before
    OOD on ties), take the first point whose TPR is nearest 0.95, return 1 − FPR there."""
    ids, oods = np.asarray(id_scores, np.float64), np.asarray(ood_scores, np.float64)
    if ids.size == 0 or oods.size == 0:
        raise OodbenchError("tuning needs validation images of both sides; the validation split is empty")
    values = np.concatenate([ids, oods])
    is_ood = np.r_[np.zeros(ids.size, bool), np.ones(oods.size, bool)]
    order = np.lexsort((is_ood, values))
    tp = ids.size - np.r_[0, np.cumsum(~is_ood[order])]
    fp = oods.size - np.r_[0, np.cumsum(is_ood[order])]
    pos = int(np.argmin(np.abs(tp / ids.size - 0.95)))
    return float(1.0 - fp[pos] / oods.size)


def _device_batches(data: ImageSet, device: torch.device, batch_size: int):
    for x in data.batches(batch_size):
        yield x.to(device)


def _clone(det: D) -> D:
    """A deep copy of ``det`` without its memo of validation grids."""
    clone = copy.copy(det)
    clone.__dict__ = copy.deepcopy({k: v for k, v in vars(det).items() if k != "_id_grids"})
    return clone


def _val_grids(det: ModelDetector, data: PerSetData) -> tuple[np.ndarray, np.ndarray]:
    """``det.grid`` of the ID and the OOD validation images; the ID grid is the same for every OOD set of a run,
    so it is computed once per (model, ID images) and kept on ``det``."""
    memo = det.__dict__.setdefault("_id_grids", {})
    key = (id(data.model), data.val_id.content_id, data.val_id.index_digest(), len(data.val_id))
    if key not in memo:
        memo[key] = np.asarray(det.grid(data.model, data.val_id, data.device, data.batch_size))
    return memo[key], np.asarray(det.grid(data.model, data.val_ood, data.device, data.batch_size))


class TunedODIN(ODIN):
    """ODIN whose (T, ε) is chosen per OOD set on validation images (Lee et al. 2018, Table 2 protocol)."""

    tunes_per_set = True

    def __init__(self, temperatures: Sequence[float] = ODIN_TEMPERATURES, epsilons: Sequence[float] = ODIN_EPSILONS,
                 temperature: float = 1000.0, epsilon: float = 0.0014, skip_baseline: bool = True) -> None:
        super().__init__(temperature, epsilon)
        self.temperatures = [float(t) for t in temperatures]
        self.epsilons = [float(e) for e in epsilons]
        if not self.temperatures or not self.epsilons or min(self.temperatures) <= 0 or min(self.epsilons) < 0:
            raise OodbenchError("odin_tuned needs non-empty grids with temperatures > 0 and epsilons >= 0")
        self.skip_baseline = bool(skip_baseline)

    def grid(self, model: nn.Module, data: ImageSet, device: torch.device, batch_size: int) -> Tensor:
        """(len(temperatures), len(epsilons), N) scores: one backward per temperature, one forward per ε."""
        out = []
        for x in _device_batches(data, device, batch_size):
            per_t = []
            for t in self.temperatures:
                signs = signed_gradient(lambda z, t=t: _odin_loss(model(z), t), x)
                per_t.append(grid_scores(lambda z, t=t: ODIN(t, 0.0).score_logits(model(z)), x, signs, self.epsilons))
            out.append(torch.stack(per_t).cpu())
        return torch.cat(out, dim=2)

    def fit_per_set(self, data: PerSetData) -> TunedODIN:
        s_id, s_ood = _val_grids(self, data)
        best: tuple[float, float, float] | None = None
        for i, t in enumerate(self.temperatures):
            for j, e in enumerate(self.epsilons):
                if self.skip_baseline and t == 1.0 and e == 0.0:
                    continue
                tnr = tnr_at_tpr95(s_id[i, j], s_ood[i, j])
                if best is None or tnr > best[0]:
                    best = (tnr, t, e)
        if best is None:
            raise OodbenchError("odin_tuned: the grid holds nothing but the baseline (T=1, eps=0)")
        tuned = _clone(self)
        tuned.temperature, tuned.epsilon = best[1], best[2]
        tuned._val = {"tnr95": best[0], "n_id": len(data.val_id), "n_ood": len(data.val_ood)}
        return tuned

    @property
    def params(self) -> dict:
        return {**super().params, **({"validation": self._val} if hasattr(self, "_val") else {})}


def _odin_loss(logits: Tensor, temperature: float) -> Tensor:
    """−log S_ŷ(x; T) averaged over the batch, exactly as :meth:`ODIN.perturb` computes it."""
    return F.cross_entropy(logits / temperature, logits.argmax(dim=1))


def official_gaussian(feats: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Class means (C, D) and the precision (D, D) as the official ``sample_estimator``: sklearn's
    ``EmpiricalCovariance(assume_centered=False)`` on the class-centred features, ``precision_`` = pinvh(Σ)."""
    from sklearn.covariance import EmpiricalCovariance

    f, y = feats.double().cpu(), labels.long().cpu()
    classes, inverse = torch.unique(y, return_inverse=True)
    means = torch.stack([f[inverse == i].mean(0) for i in range(len(classes))])
    centred = (f - means[inverse]).numpy()
    precision = EmpiricalCovariance(assume_centered=False).fit(centred).precision_
    return means, torch.from_numpy(precision)


def gaussian_score(feats: Tensor, means: Tensor, precision: Tensor) -> Tensor:
    """max_c −½ (f − μ_c)ᵀ P (f − μ_c) for each row f (float64)."""
    f = feats.double()
    z = f @ precision
    d = (z * f).sum(1, keepdim=True) - 2 * z @ means.T + ((means @ precision) * means).sum(1)[None, :]
    return -0.5 * d.min(dim=1).values


class TunedMahalanobis(ModelDetector):
    """Mahalanobis layer ensemble with noise and weights tuned per OOD set (Lee et al. 2018, Alg. 1, Table 2)."""

    needs_fit = True
    tunes_per_set = True

    def __init__(self, noises: Sequence[float] = MAHALANOBIS_NOISES, layers: Sequence[str] | None = None,
                 max_iter: int = 1000) -> None:
        self.noises = [float(e) for e in noises]
        if not self.noises or min(self.noises) < 0:
            raise OodbenchError("mahalanobis_tuned needs a non-empty noise grid of values >= 0")
        self.layers = None if layers is None else list(layers)
        self.max_iter = int(max_iter)
        self.epsilon: float | None = None
        self.layer_weights: list[float] | None = None
        self.bias = 0.0
        self._gauss: dict[str, tuple[Tensor, Tensor]] = {}

    def _pooled(self, model: nn.Module, x: Tensor, layer: str) -> Tensor:
        return model.feature_maps(x, [layer])[layer].mean(dim=(2, 3))

    def fit(self, data: FitData) -> None:
        if data.images is None or data.model is None:
            raise OodbenchError("mahalanobis_tuned fits per-layer Gaussians with the network: it needs the ID "
                                "training images and the model (FitData.images / FitData.model)")
        model, device = data.model, data.device or torch.device("cpu")
        layers = self.layers or list(model.feature_map_names)
        feats: dict[str, list[Tensor]] = {k: [] for k in layers}
        with torch.no_grad():
            for x in _device_batches(data.images, device, data.batch_size):
                for k, v in model.feature_maps(x, layers).items():
                    feats[k].append(v.mean(dim=(2, 3)).double().cpu())
        labels = torch.from_numpy(np.asarray(data.images.labels))
        self._gauss = {k: tuple(t.to(device) for t in official_gaussian(torch.cat(v), labels))
                       for k, v in feats.items()}

    def _layer_grid(self, model: nn.Module, x: Tensor, epsilons: Sequence[float]) -> Tensor:
        """(len(epsilons), N, L) layer scores M_l(x̃): one backward per layer, one forward per ε."""
        if not self._gauss:
            raise OodbenchError("mahalanobis_tuned must be fit on ID training images before scoring")
        cols = []
        for layer, (means, precision) in self._gauss.items():
            def score(z: Tensor, layer: str = layer, means: Tensor = means, precision: Tensor = precision) -> Tensor:
                return gaussian_score(self._pooled(model, z, layer), means, precision)

            signs = signed_gradient(lambda z, s=score: -s(z).mean(), x)  # −M_l = ½ d² of the nearest class
            cols.append(grid_scores(score, x, signs, epsilons))
        return torch.stack(cols, dim=2)

    def grid(self, model: nn.Module, data: ImageSet, device: torch.device, batch_size: int) -> np.ndarray:
        parts = [self._layer_grid(model, x, self.noises).cpu() for x in _device_batches(data, device, batch_size)]
        return torch.cat(parts, dim=1).numpy()

    def fit_per_set(self, data: PerSetData) -> TunedMahalanobis:
        g_id, g_ood = _val_grids(self, data)
        h_id, h_ood = g_id.shape[1] // 2, g_ood.shape[1] // 2
        if min(h_id, h_ood) < 5:
            raise OodbenchError(f"mahalanobis_tuned needs >= 10 validation images per side, got "
                                f"{g_id.shape[1]} ID / {g_ood.shape[1]} OOD")
        best: tuple[float, int, np.ndarray, float] | None = None
        for i in range(len(self.noises)):
            w, b = _logistic(g_id[i, :h_id], g_ood[i, :h_ood], self.max_iter)
            tnr = tnr_at_tpr95(g_id[i, h_id:] @ w + b, g_ood[i, h_ood:] @ w + b)
            if best is None or tnr > best[0]:
                best = (tnr, i, w, b)
        assert best is not None
        tuned = _clone(self)
        tuned.epsilon, tuned.layer_weights, tuned.bias = self.noises[best[1]], best[2].tolist(), best[3]
        tuned._val = {"tnr95": best[0], "n_id": int(g_id.shape[1]), "n_ood": int(g_ood.shape[1])}
        return tuned

    def score_batch(self, model: nn.Module, x: Tensor) -> Tensor:
        if self.layer_weights is None or self.epsilon is None:
            raise OodbenchError("mahalanobis_tuned is tuned per OOD set: use a protocol with a validation split "
                                "(protocol=mahalanobis_table2)")
        s = self._layer_grid(model, x, [self.epsilon])[0]
        return s @ torch.tensor(self.layer_weights, dtype=s.dtype, device=s.device) + self.bias

    @property
    def params(self) -> dict:
        return {**super().params, **({"validation": self._val} if hasattr(self, "_val") else {})}


def _logistic(id_val: np.ndarray, ood_val: np.ndarray, max_iter: int) -> tuple[np.ndarray, float]:
    """The official ``LogisticRegressionCV`` (5-fold, L2, lbfgs) on raw layer scores, ID = 1; returns the weights
    and bias of its decision function (monotone in the official −P(OOD))."""
    from sklearn.linear_model import LogisticRegressionCV

    quiet = {"l1_ratios": (0.0,), "scoring": None, "use_legacy_attributes": False}  # sklearn ≥ 1.9 warnings
    kw = {k: v for k, v in quiet.items() if k in inspect.signature(LogisticRegressionCV).parameters}
    x = np.concatenate([id_val, ood_val])
    y = np.r_[np.ones(len(id_val)), np.zeros(len(ood_val))]
    lr = LogisticRegressionCV(max_iter=max_iter, **kw).fit(x, y)
    return lr.coef_[0].astype(np.float64), float(lr.intercept_[0])

