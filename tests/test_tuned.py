"""Per-OOD-set tuned ODIN / Mahalanobis (Lee et al. 2018 Table 2): the shared-gradient grid equals the naive
per-ε computation, the official selection rule and estimator, and detection on toy data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_detectors_features import _TinyNet
from torch import nn

from oodbench.data.base import ImageSet
from oodbench.detectors import ODIN
from oodbench.detectors.base import FitData, PerSetData
from oodbench.detectors.tuned import (
    TunedMahalanobis,
    TunedODIN,
    gaussian_score,
    official_gaussian,
    tnr_at_tpr95,
)
from oodbench.errors import OodbenchError
from oodbench.metrics import auroc
from oodbench.models.normalized import Classifier


def _model() -> Classifier:
    return Classifier(_TinyNet(), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()


def _set(n: int, seed: int, ood: bool = False) -> ImageSet:
    g, y = torch.Generator().manual_seed(seed), torch.arange(n) % 3
    base = torch.rand(n, 3, 8, 8, generator=g) if ood else F.one_hot(y, 3).float()[:, :, None, None]
    x = (0.7 * base + 0.15 * torch.rand(n, 3, 8, 8, generator=g)).clamp(0, 1)
    return ImageSet(f"toy{seed}", x.permute(0, 2, 3, 1).numpy().copy(), y.numpy(), "toy", n, np.arange(n), "toy")


def _per_set(model: nn.Module, val_id: ImageSet, val_ood: ImageSet) -> PerSetData:
    return PerSetData(model, torch.device("cpu"), 16, val_id, val_ood, "toy", 0)


def _pixels(data: ImageSet) -> torch.Tensor:
    return torch.cat(list(data.batches(len(data))))


def test_tnr_at_tpr95_follows_the_official_curve_walk():
    ids = np.arange(1, 21, dtype=float)  # 20 ID scores 1..20: TPR 0.95 after dropping the lowest one
    assert tnr_at_tpr95(ids, np.array([0.5, 1.5, 30.0, 40.0])) == pytest.approx(0.25)  # 3 of 4 OOD above 1.5
    assert tnr_at_tpr95(ids, np.array([0.0, 0.1])) == 1.0
    assert tnr_at_tpr95(ids, np.array([1.0, 2.0])) == 0.0  # ties: the ID image goes first, both OOD still accepted
    with pytest.raises(OodbenchError, match="empty"):
        tnr_at_tpr95(ids, np.array([]))


def test_odin_grid_equals_naive_per_epsilon_computation():
    """One backward per temperature serves every ε: each grid cell equals ODIN(T, ε) scored from scratch."""
    model, data = _model(), _set(40, 0)
    det = TunedODIN(temperatures=(1, 10, 1000), epsilons=(0.0, 0.0014, 0.01, 0.1))
    grid = det.grid(model, data, torch.device("cpu"), 16)
    for i, t in enumerate(det.temperatures):
        for j, e in enumerate(det.epsilons):
            naive = torch.cat([ODIN(t, e).score_batch(model, x) for x in data.batches(16)])  # same batches
            assert torch.equal(grid[i, j], naive), (t, e)


def test_odin_tuning_picks_the_best_validation_cell_and_scores_as_odin():
    model, val_id, val_ood = _model(), _set(40, 0), _set(40, 5, ood=True)
    det = TunedODIN(temperatures=(1, 10, 1000), epsilons=(0.0, 0.002, 0.05))
    tuned = det.fit_per_set(_per_set(model, val_id, val_ood))
    assert det.epsilon == 0.0014 and det.temperature == 1000  # self is never mutated
    x_id, x_ood = _pixels(val_id), _pixels(val_ood)
    best = max(((tnr_at_tpr95(ODIN(t, e).score_batch(model, x_id).detach().numpy(),
                              ODIN(t, e).score_batch(model, x_ood).detach().numpy()), -k, t, e)
                for k, (t, e) in enumerate((t, e) for t in det.temperatures for e in det.epsilons)
                if (t, e) != (1.0, 0.0)))
    assert (tuned.temperature, tuned.epsilon) == (best[2], best[3])
    assert tuned.params["validation"]["tnr95"] == pytest.approx(best[0])
    assert torch.equal(tuned.score_batch(model, x_id), ODIN(best[2], best[3]).score_batch(model, x_id))


def test_official_gaussian_is_the_pseudo_inverse_on_singular_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    f = torch.randn(60, 5, generator=g) @ torch.randn(5, 8, generator=g)  # rank 5 in 8-d: singular Σ
    means, precision = official_gaussian(f, y)
    centred = (f.double() - means[y]).numpy()
    centred -= centred.mean(0)
    expected = np.linalg.pinv(centred.T @ centred / len(centred), hermitian=True)
    assert np.allclose(precision.numpy(), expected, atol=1e-8 * np.abs(expected).max())
    s = gaussian_score(f[:4], means, precision)
    d = [min(float((f[i].double() - m) @ precision @ (f[i].double() - m)) for m in means) for i in range(4)]
    assert torch.allclose(s, -0.5 * torch.tensor(d, dtype=torch.float64))


def _fitted_mahalanobis(noises=(0.0, 0.01, 0.002)) -> tuple[TunedMahalanobis, Classifier]:
    model, train = _model(), _set(90, 1)
    det = TunedMahalanobis(noises=noises)
    det.fit(FitData(None, None, None, None, "toy", images=train, model=model, batch_size=32))  # type: ignore[arg-type]
    return det, model


def test_mahalanobis_grid_equals_naive_per_noise_computation():
    """One backward per layer serves every noise: each cell equals a fresh gradient step at that noise."""
    det, model = _fitted_mahalanobis()
    x = _pixels(_set(30, 2))
    grid = det._layer_grid(model, x, det.noises)
    for i, eps in enumerate(det.noises):
        for j, (layer, (means, precision)) in enumerate(det._gauss.items()):
            xg = x.clone().requires_grad_(True)
            m = gaussian_score(model.feature_maps(xg, [layer])[layer].mean(dim=(2, 3)), means, precision)
            (grad,) = torch.autograd.grad(-m.mean(), xg)
            with torch.no_grad():
                pooled = model.feature_maps(x - eps * grad.sign(), [layer])[layer].mean(dim=(2, 3))
                assert torch.equal(grid[i, :, j], gaussian_score(pooled, means, precision)), (eps, layer)
    assert (grid[2] > grid[0]).float().mean() > 0.9  # the step raises the confidence score


def test_mahalanobis_tuning_detects_toy_ood_and_refuses_untuned_use():
    det, model = _fitted_mahalanobis()
    val_id, val_ood = _set(60, 3), _set(60, 4, ood=True)
    with pytest.raises(OodbenchError, match="tuned per OOD set"):
        det.score_batch(model, _pixels(val_id))
    tuned = det.fit_per_set(_per_set(model, val_id, val_ood))
    assert det.epsilon is None and tuned.epsilon in det.noises and len(tuned.layer_weights) == 2
    s_id, s_ood = (tuned.score_batch(model, _pixels(_set(60, k, ood=k == 7))).detach().numpy() for k in (6, 7))
    assert auroc(s_id, s_ood) > 0.95
    with pytest.raises(OodbenchError, match=">= 10 validation images"):
        det.fit_per_set(_per_set(model, _set(6, 3), val_ood))


def test_bad_grids_are_one_clear_error():
    with pytest.raises(OodbenchError, match="non-empty"):
        TunedODIN(temperatures=())
    with pytest.raises(OodbenchError, match="noise grid"):
        TunedMahalanobis(noises=(-0.1,))


def test_id_validation_grid_is_computed_once_per_run(monkeypatch):
    model, val_id = _model(), _set(40, 0)
    det = TunedODIN(temperatures=(1, 1000), epsilons=(0.0, 0.002))
    calls = []
    grid = det.grid
    monkeypatch.setattr(det, "grid", lambda m, d, *a: calls.append(d.name) or grid(m, d, *a))
    first = det.fit_per_set(_per_set(model, val_id, _set(40, 5, ood=True)))
    second = det.fit_per_set(_per_set(model, val_id, _set(40, 8, ood=True)))
    assert calls == ["toy0", "toy5", "toy8"]  # the ID grid once, each OOD set's once
    assert "_id_grids" not in vars(first) and "_id_grids" not in vars(second)
