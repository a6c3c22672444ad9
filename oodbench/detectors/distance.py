"""Feature-space distances: Mahalanobis (penultimate, and the noisy multi-layer ensemble), relative Mahalanobis, KNN,
ViM and its residual alone."""

from __future__ import annotations

import copy
import inspect
import logging
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oodbench.data.base import ImageSet, to_tensor
from oodbench.detectors.base import FeatureDetector, FitData, ModelDetector, PerSetData
from oodbench.detectors.shaping import Head, linear_params
from oodbench.errors import OodbenchError

log = logging.getLogger("oodbench")
RCOND, RIDGE = 1e-10, 1e-6  # covariance="ridge": Σ with an eigenvalue ≤ RCOND·max becomes Σ + RIDGE·(tr Σ / D)·I
COVARIANCE = ("pinv", "ridge")


def check_covariance(what: str, covariance: str) -> str:
    if covariance not in COVARIANCE:
        raise OodbenchError(f"{what}: covariance must be one of {', '.join(COVARIANCE)}, got {covariance!r}")
    return covariance


def tied_gaussian(feats: Tensor, labels: Tensor, what: str = "Mahalanobis", covariance: str = "pinv"
                  ) -> tuple[Tensor, Tensor]:
    """Class means (C, D) and whitening A (D, k), A Aᵀ = Σ⁺, of the tied Σ = 1/N Σ_i (f_i − μ_{y_i})(·)ᵀ (float64).

    ``covariance="pinv"`` (default, Lee et al.'s official ``sample_estimator``: sklearn's
    ``EmpiricalCovariance().precision_`` = pinvh(Σ)): the pseudo-inverse, dropping the directions whose eigenvalue
    is ≤ D·eps·max (the pinvh cutoff) — a singular Σ (dead channels, fewer images than dimensions) keeps only the
    directions the features span. ``"ridge"``: an ill-conditioned Σ (eigenvalue ≤ RCOND·max) becomes Σ + λI,
    λ = RIDGE · mean eigenvalue, with a warning (oodbench's estimator before it followed the official code; on
    ``odin_densenet10``, whose tied Σ is singular, it costs AUROC — see the Mahalanobis page)."""
    check_covariance(what, covariance)
    f, y = feats.double(), labels.to(feats.device).long()
    inverse = torch.unique(y, return_inverse=True)[1]
    means = torch.stack([f[inverse == i].mean(0) for i in range(int(inverse.max()) + 1)])
    centered = f - means[inverse]
    evals, evecs = torch.linalg.eigh(centered.T @ centered / len(f))
    top = float(evals.max())
    if top <= 0:
        raise OodbenchError(f"{what}: the ID-train features do not vary within classes; cannot fit a covariance")
    if covariance == "pinv":
        keep = evals > f.shape[1] * torch.finfo(torch.float64).eps * top
        if not bool(keep.all()):
            log.info("%s: tied covariance of %d features (%d-d) is singular; pseudo-inverse over %d of %d directions "
                     "(as the official code)", what, len(f), f.shape[1], int(keep.sum()), f.shape[1])
        return means, evecs[:, keep] / evals[keep].sqrt()
    if float(evals.min()) <= RCOND * top:
        lam = RIDGE * float(evals.clamp_min(0).mean())
        msg = (f"{what}: tied covariance of {len(f)} features ({f.shape[1]}-d) is singular or ill-conditioned "
               f"(eigenvalues {float(evals.min()):.2e}..{top:.2e}); regularized to Σ + {lam:.2e}·I")
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        evals = evals.clamp_min(0) + lam
    return means, evecs / evals.sqrt()


def max_neg_distance(feats: Tensor, means: Tensor, whiten: Tensor) -> Tensor:
    """max_c −(f − μ_c)ᵀ Σ⁻¹ (f − μ_c) for each row f, in float64."""
    z, m = feats.double() @ whiten, means @ whiten
    d = (z * z).sum(1, keepdim=True) - 2 * z @ m.T + (m * m).sum(1)[None, :]
    return -d.clamp_min(0).min(dim=1).values


class Mahalanobis(FeatureDetector):
    """Mahalanobis score (Lee et al., NeurIPS 2018, Eq. 1-2) on penultimate features, without input noise:
    class means μ_c and one tied covariance Σ from ID-train; M(x) = max_c −(f(x) − μ_c)ᵀ Σ⁺ (f(x) − μ_c), Σ⁺ the
    pseudo-inverse as in the official code (``covariance="ridge"``: the older regularized inverse,
    :func:`tied_gaussian`)."""

    needs_fit = True

    def __init__(self, covariance: str = "pinv") -> None:
        self.covariance = check_covariance(type(self).__name__, covariance)

    def fit(self, data: FitData) -> None:
        self._means, self._whiten = tied_gaussian(data.features, data.labels, type(self).__name__, self.covariance)

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        if not hasattr(self, "_means"):
            raise OodbenchError(f"{type(self).__name__} must be fit on ID training features before scoring (call fit)")
        return max_neg_distance(features.to(self._means.device), self._means, self._whiten)


class MahalanobisEnsemble(ModelDetector):
    """Mahalanobis with input preprocessing and a feature ensemble (Lee et al., NeurIPS 2018, Eq. 2, Eq. 4,
    Alg. 1). Per layer l: f_l(x) = ``model.feature_maps`` averaged over H, W; tied Gaussian (μ_{l,c}, Σ_l)
    from ID-train (:meth:`fit_layers`); x̃ = x + ε·sign(∇ₓ M_l(x)) — the step that raises the confidence
    score, in pixel space (= the official ε/std step after normalization), not clipped to [0, 1];
    M_l(x̃) = max_c −(f_l(x̃) − μ_{l,c})ᵀ Σ_l⁻¹ (·). Score = Σ_l α_l M_l(x̃) + β, (α, β) from a logistic
    regression of ID (1) vs OOD (0) validation layer scores (:meth:`fit_weights`; its decision function,
    monotone in the official ``predict_proba``), or given as ``layer_weights`` / ``bias``."""

    needs_fit = True  # per-layer Gaussians on ID train (fit), then α, β per OOD set on validation (fit_per_set)
    tunes_per_set = True

    def __init__(self, epsilon: float = 0.0014, layers: Sequence[str] | None = None,
                 layer_weights: Sequence[float] | None = None, bias: float = 0.0, covariance: str = "pinv") -> None:
        if epsilon < 0:
            raise OodbenchError(f"MahalanobisEnsemble epsilon must be >= 0, got {epsilon}")
        self.covariance = check_covariance("MahalanobisEnsemble", covariance)
        self.epsilon, self.bias, self.layers = float(epsilon), float(bias), None if layers is None else list(layers)
        self.layer_weights = None if layer_weights is None else [float(a) for a in layer_weights]
        self._gauss: dict[str, tuple[Tensor, Tensor]] = {}

    def _pooled(self, model: nn.Module, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        return {k: v.mean(dim=(2, 3)) for k, v in model.feature_maps(x, list(layers)).items()}

    def fit_layers(self, model: nn.Module, images: Tensor | Iterable, labels: Tensor | None = None,
                   batch_size: int = 128) -> None:
        """Per-layer class means and tied covariance from ID-train pixels in [0, 1]: ``images`` is an
        (N, 3, H, W) tensor with ``labels`` (N,), or an iterable of (x, y) batches (e.g. a DataLoader)."""
        layers = self.layers or list(model.feature_map_names)
        if isinstance(images, Tensor):
            if labels is None or len(labels) != len(images):
                raise OodbenchError("fit_layers needs one label per image")
            images = zip(images.split(batch_size), labels.split(batch_size))
        feats, ys = {k: [] for k in layers}, []  # type: ignore[var-annotated]
        with torch.no_grad():
            for x, y in images:
                for k, v in self._pooled(model, x.to(next(model.parameters()).device), layers).items():
                    feats[k].append(v.double())
                ys.append(torch.as_tensor(y))
        y = torch.cat(ys)
        self._gauss = {k: tied_gaussian(torch.cat(v), y, f"MahalanobisEnsemble layer {k}", self.covariance)
                       for k, v in feats.items()}

    def fit(self, data: FitData) -> None:
        """Per-layer Gaussians from the ID training images (the network is needed: FitData.images / .model)."""
        if data.images is None or data.model is None:
            raise OodbenchError("MahalanobisEnsemble fits per-layer Gaussians with the network: it needs the ID "
                                "training images and the model (FitData.images / FitData.model)")
        device = data.device or torch.device("cpu")
        self.fit_layers(data.model, to_tensor(data.images.images).to(device),
                        torch.from_numpy(np.asarray(data.images.labels)), data.batch_size)

    def fit_per_set(self, data: PerSetData) -> MahalanobisEnsemble:
        """A copy with α, β fit (:meth:`fit_weights`) on the layer scores of this OOD set's validation split."""
        def layers(images: ImageSet) -> Tensor:
            return torch.cat([self.layer_scores(data.model, x.to(data.device)).float().cpu()
                              for x in images.batches(data.batch_size)])

        tuned = copy.deepcopy(self)
        tuned.fit_weights(layers(data.val_id), layers(data.val_ood), seed=data.seed)
        log.info("MahalanobisEnsemble weights for %s: %s", data.ood_name, np.round(tuned.layer_weights, 4).tolist())
        return tuned

    def layer_scores(self, model: nn.Module, x: Tensor) -> Tensor:
        """(N, L) float64 per-layer scores M_l(x̃), x̃ perturbed separately for each layer."""
        if not self._gauss:
            raise OodbenchError("MahalanobisEnsemble needs fit_layers(model, images, labels) before scoring")
        cols = []
        for k, gauss in self._gauss.items():
            x_tilde = x.detach()
            if self.epsilon > 0:
                with torch.enable_grad():
                    xg = x.detach().clone().requires_grad_(True)
                    m = max_neg_distance(self._pooled(model, xg, [k])[k], *gauss)
                    x_tilde = x_tilde + self.epsilon * torch.autograd.grad(m.sum(), xg)[0].sign()
            with torch.no_grad():
                cols.append(max_neg_distance(self._pooled(model, x_tilde, [k])[k], *gauss))
        return torch.stack(cols, dim=1)

    def fit_weights(self, id_val: Tensor | np.ndarray, ood_val: Tensor | np.ndarray, seed: int = 0) -> np.ndarray:
        """``LogisticRegressionCV`` (5-fold, as the official code) of ID = 1 vs OOD = 0 on (N, L) :meth:`layer_scores`
        of validation images, on standardized columns mapped back; sets ``layer_weights`` (α), ``bias`` (β)."""
        from sklearn.linear_model import LogisticRegressionCV
        quiet = {"l1_ratios": (0.0,), "scoring": None, "use_legacy_attributes": False}  # sklearn ≥ 1.9 warnings
        kw = {k: v for k, v in quiet.items() if k in inspect.signature(LogisticRegressionCV).parameters}
        s_id, s_ood = np.asarray(id_val, np.float64), np.asarray(ood_val, np.float64)
        x, y = np.concatenate([s_id, s_ood]), np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
        mu, sd = x.mean(0), x.std(0) + 1e-12
        lr = LogisticRegressionCV(cv=5, max_iter=5000, random_state=seed, **kw).fit((x - mu) / sd, y)
        alpha = lr.coef_[0] / sd
        self.layer_weights, self.bias = alpha.tolist(), float(lr.intercept_[0] - (alpha * mu).sum())
        return alpha

    def score_batch(self, model: nn.Module, x: Tensor) -> Tensor:
        if self.layer_weights is None:
            raise OodbenchError("MahalanobisEnsemble needs layer_weights: pass them, or call fit_weights")
        s = self.layer_scores(model, x)
        if s.shape[1] != len(self.layer_weights):
            raise OodbenchError(f"{len(self.layer_weights)} layer weights for {s.shape[1]} layers")
        return s @ torch.tensor(self.layer_weights, dtype=s.dtype, device=s.device) + self.bias


class KNN(FeatureDetector):
    """Deep nearest neighbours (Sun et al., ICML 2022, Sec. 3): z = f/‖f‖ for ID-train and test features;
    score = −‖z − z_(k)‖, the (negated) distance to the k-th nearest normalized ID-train feature."""

    needs_fit = True

    def __init__(self, k: int = 50, chunk: int = 1024) -> None:
        self.k, self._chunk = int(k), int(chunk)
        if self.k < 1:
            raise OodbenchError(f"KNN k must be >= 1, got {k}")

    def fit(self, data: FitData) -> None:
        if len(data.features) < self.k:
            raise OodbenchError(f"KNN k={self.k} exceeds the {len(data.features)} ID-train features; lower k")
        self._bank = F.normalize(data.features.float(), dim=1)

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        if not hasattr(self, "_bank"):
            raise OodbenchError("KNN must be fit on ID training features before scoring (call fit)")
        bank = self._bank.to(features.device)
        parts = [torch.cdist(F.normalize(c.float(), dim=1), bank).topk(self.k, dim=1, largest=False).values[:, -1]
                 for c in features.split(self._chunk)]
        return -torch.cat(parts).double()


class ViM(FeatureDetector):
    """Virtual-logit Matching (Wang et al., CVPR 2022, Eq. 4-8): origin u = −W⁺b; principal space P of ID-train
    f − u from the eigenvectors of its uncentered second moment (official code); r(f) = ‖P⊥(f − u)‖; α = mean
    max-logit / mean r on ID-train; score = logsumexp(logits) − α·r(f). ``dim`` (of P): None = the official
    code's 1000 for ≥ 2048-d features, 512 for ≥ 768-d, and (our choice) D/2 below, e.g. 171 for 342-d."""

    needs_fit = True

    def __init__(self, dim: int | None = None) -> None:
        self.dim = None if dim is None else int(dim)

    def principal_dim(self, n: int) -> int:
        d = self.dim if self.dim is not None else (1000 if n >= 2048 else 512 if n >= 768 else n // 2)
        if not 0 < d < n:
            raise OodbenchError(f"ViM dim must be between 1 and {n - 1} for {n}-d features, got {d}")
        return d

    def fit(self, data: FitData) -> None:
        f = data.features.double()
        w, b = (t.double().to(f.device) for t in linear_params(data.head, data.features))
        self._u = -torch.linalg.pinv(w) @ b
        x = f - self._u
        evals, evecs = torch.linalg.eigh(x.T @ x / len(x))
        self._ns = evecs[:, evals.argsort(descending=True)[self.principal_dim(f.shape[1]):]]
        self._alpha = float((f @ w.T + b).max(1).values.mean() / (x @ self._ns).norm(dim=1).mean())

    def residual(self, features: Tensor) -> Tensor:
        """r(f) = ‖P⊥(f − u)‖, float64."""
        if not hasattr(self, "_ns"):
            raise OodbenchError(f"{type(self).__name__} must be fit on ID training features before scoring (call fit)")
        return ((features.double().to(self._u.device) - self._u) @ self._ns).norm(dim=1)

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        r = self.residual(features)
        w, b = (t.double().to(r.device) for t in linear_params(head, features))
        return torch.logsumexp(features.double().to(r.device) @ w.T + b, dim=1) - self._alpha * r


class ViMResidual(ViM):
    """ViM's residual alone (Wang, Li, Zhang & Wang, CVPR 2022; method ``Residual`` of the official haoqiwang/vim
    benchmark.py): S(f) = −‖P⊥(f − u)‖, u and the principal space P fit exactly as :class:`ViM` (same ``dim``)."""

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        return -self.residual(features)


class RMD(Mahalanobis):
    """Relative Mahalanobis distance (Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan, arXiv:2106.09022, 2021):
    MD_k(f) = (f − μ_k)ᵀ Σ⁺ (f − μ_k) with :class:`Mahalanobis`' class means and tied Σ; a background Gaussian over
    all ID-train features, MD_0(f) = (f − μ_0)ᵀ Σ_0⁺ (f − μ_0) (μ_0, Σ_0 = their mean and covariance); RMD_k =
    MD_k − MD_0 and S(f) = −min_k RMD_k(f) = max_k −MD_k(f) + MD_0(f). Both inverses are pseudo-inverses as
    sklearn's ``EmpiricalCovariance().precision_`` in OpenOOD's ``rmds_postprocessor.py`` (``covariance="ridge"``:
    :func:`tied_gaussian`'s regularized inverse); no official code was released with the paper."""

    def fit(self, data: FitData) -> None:
        super().fit(data)
        flat = torch.zeros(len(data.features), dtype=torch.long)  # one class: μ_0, Σ_0
        self._background = tied_gaussian(data.features, flat, "RMD background", self.covariance)

    def score_features(self, features: Tensor, head: Head) -> Tensor:
        return super().score_features(features, head) - max_neg_distance(
            features.to(self._means.device), *self._background)
