"""The post-hoc detectors of issue 20 against their equations, computed independently in numpy on a few rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from oodbench.detectors import FDBD, GEN, NCI, RMD, SCALE, SHE, VRA, Energy, Entropy, FitData, GradNorm, KLMatching
from oodbench.detectors.distance import ViMResidual
from oodbench.detectors.logit_scores import TemperatureScaling
from oodbench.detectors.neighbours import NNGuide, Relation
from oodbench.errors import OodbenchError

D, C = 6, 4


def _head(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(D, C)


def _nearest_mean_head(f: torch.Tensor, y: torch.Tensor) -> nn.Linear:
    """z_c = f·m_c − ½‖m_c‖² (m_c = class means): classifies the clustered features of :func:`_feats` mostly right."""
    head = nn.Linear(D, C)
    m = torch.stack([f[y == c].mean(0) for c in range(C)])
    with torch.no_grad():
        head.weight.copy_(m)
        head.bias.copy_(-0.5 * (m * m).sum(1))
    return head


def _wb(head: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return head.weight.detach().double().numpy(), head.bias.detach().double().numpy()


def _feats(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative features around C class centres, labels cycling through the classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    return (2 * torch.rand(C, D, generator=g)[y] + 0.5 * torch.rand(n, D, generator=g)), y


def _fit(det, feats: torch.Tensor, labels: torch.Tensor, head: nn.Linear):
    with torch.no_grad():
        logits = head(feats)
    det.fit(FitData(feats, labels, logits, head, "test"))
    return det


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _energy(z: np.ndarray) -> np.ndarray:
    m = z.max(1)
    return m + np.log(np.exp(z - m[:, None]).sum(1))


LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-3.0, 4.0, 1.0]])


# ------------------------------------------------------------------------------------------------ logit scores
def test_entropy_by_hand():
    p = _softmax(LOGITS.double().numpy())
    got = Entropy().score_logits(LOGITS)
    assert got.dtype == torch.float64
    assert np.allclose(got.numpy(), (p * np.log(p)).sum(1), rtol=1e-12)
    assert got[1].item() == pytest.approx(-math.log(3))


def test_gen_top_m_by_hand():
    p = _softmax(LOGITS.double().numpy())
    top2 = -np.sort(-p, axis=1)[:, :2]
    expect = -(top2**0.1 * (1 - top2) ** 0.1).sum(1)
    assert np.allclose(GEN(gamma=0.1, M=2).score_logits(LOGITS).numpy(), expect, rtol=1e-12)
    all3 = -(p**0.5 * (1 - p) ** 0.5).sum(1)  # M = 100 > C = 3: capped, every class
    assert np.allclose(GEN(gamma=0.5).score_logits(LOGITS).numpy(), all3, rtol=1e-12)
    assert GEN().params == {"gamma": 0.1, "M": 100}


def test_temperature_scaling_minimizes_the_nll():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    z = 3 * torch.nn.functional.one_hot(y, 3).float() + 2.5 * torch.randn(60, 3, generator=g)  # errors: finite T
    det = TemperatureScaling()
    with pytest.raises(OodbenchError, match="fit"):
        det.score_logits(LOGITS)
    det.fit(FitData(torch.zeros(60, 1), y, z, None, "test"))  # type: ignore[arg-type]
    zz, yy = z.double().numpy(), y.numpy()

    def nll(t: float) -> float:
        return float(-np.log(_softmax(zz / t)[np.arange(60), yy]).mean())

    t = det.params["temperature"]
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    assert t == pytest.approx(grid[np.argmin([nll(s) for s in grid])], rel=2e-3)  # the grid's best
    assert nll(t) <= min(nll(t * 1.001), nll(t / 1.001))  # a local (convex: global) minimum to 0.1 %
    assert np.allclose(det.score_logits(LOGITS).numpy(), _softmax(LOGITS.double().numpy() / t).max(1))
    assert det.metric_hints() == {"softmax_temperature": t}
    separable = FitData(torch.zeros(3, 1), torch.tensor([0, 1, 2]), 5 * torch.eye(3), None, "3 images")  # type: ignore
    with pytest.raises(OodbenchError, match=r"NLL of 3 images has no minimizer .*\(it falls as T → 0; 0 of 3 images "
                                            r"misclassified\): fit it on held-out labelled ID data"):
        TemperatureScaling().fit(separable)  # the NLL falls forever as T → 0


def test_kl_matching_by_hand():
    fit_logits = torch.tensor([[3.0, 0, 0], [2.0, 1, 0], [0, 4.0, 0], [0.5, 2.0, 0.2]])  # nobody predicts class 2
    det = KLMatching()
    det.fit(FitData(torch.zeros(4, 1), torch.zeros(4), fit_logits, None, "test"))  # type: ignore[arg-type]
    pf = _softmax(fit_logits.double().numpy())
    templates = [pf[:2].mean(0), pf[2:].mean(0)]
    p = _softmax(LOGITS.double().numpy())
    expect = [-min(float((q * np.log(q / d)).sum()) for d in templates) for q in p]
    assert np.allclose(det.score_logits(LOGITS).numpy(), expect, rtol=1e-10)


# ------------------------------------------------------------------------------------------------ shapers
def test_scale_scales_the_unpruned_features():
    head, (f, _) = _head(1), _feats(5, 2)
    w, b = _wb(head)
    x = f.double().numpy()
    k = D - round(D * 0.5)  # p = 50: the 3 largest of 6 give s2
    factor = np.exp(x.sum(1) / np.sort(x, axis=1)[:, -k:].sum(1))
    with torch.no_grad():
        got = SCALE(p=50).score_features(f, head).numpy()
    assert np.allclose(got, _energy((x * factor[:, None]) @ w.T + b), rtol=1e-5)
    assert SCALE().params == {"score": "Energy(temperature=1.0)", "p": 65.0}


def test_vra_piecewise_rectifier_by_hand():
    head, (f, y), (t, _) = _head(3), _feats(50, 4), _feats(7, 5)
    det = _fit(VRA(low=30, high=80, gamma=0.25), f, y, head)
    lo, hi = np.percentile(f.double().numpy(), [30, 80], axis=0)  # per unit (column)
    x = t.double().numpy()
    g = np.where(x < lo, 0.0, np.where(x > hi, hi, x + 0.25))
    assert 0 < (x < lo).sum() and 0 < (x > hi).sum() and 0 < ((x >= lo) & (x <= hi)).sum()  # all three pieces
    w, b = _wb(head)
    with torch.no_grad():
        assert np.allclose(det.score_features(t, head).numpy(), _energy(g @ w.T + b), rtol=1e-5)
        assert np.allclose(det.shape(t).numpy(), g, atol=1e-6)


# ------------------------------------------------------------------------------------------------ head scores
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_gradnorm_closed_form_equals_autograd(temperature):
    """‖∂L/∂W‖₁ with L = Σ_c −log softmax(z/T)_c (official: batch of one, weight only) = (1/T) Σ_c |C p_c − 1| ‖f‖₁."""
    head, (f, _) = _head(5), _feats(6, 6)
    lin = nn.Linear(D, C).double()
    lin.load_state_dict({k: v.double() for k, v in head.state_dict().items()})
    expect = []
    for row in f.double():  # the official loop: batch of one, targets = ones, summed over classes
        lin.zero_grad()
        loss = -torch.log_softmax(lin(row[None]) / temperature, dim=1).sum()
        loss.backward()
        expect.append(lin.weight.grad.abs().sum().item())
    w, b = _wb(head)
    x = f.double().numpy()
    p = _softmax((x @ w.T + b) / temperature)
    closed = np.abs(C * p - 1).sum(1) * np.abs(x).sum(1) / temperature
    got = GradNorm(temperature).score_features(f, head)
    assert got.dtype == torch.float64
    assert np.allclose(got.numpy(), expect, rtol=1e-10) and np.allclose(got.numpy(), closed, rtol=1e-10)


def test_fdbd_by_hand():
    head, (f, y), (t, _) = _head(7), _feats(40, 8), _feats(5, 9)
    det = _fit(FDBD(), f, y, head)
    w, b = _wb(head)
    mu, x = f.double().numpy().mean(0), t.double().numpy()
    expect = []
    for v in x:
        z = w @ v + b
        k = int(np.argmax(z))
        d = [abs((w[k] - w[c]) @ v + b[k] - b[c]) / np.linalg.norm(w[k] - w[c]) for c in range(C) if c != k]
        expect.append(np.mean(d) / np.linalg.norm(v - mu))
    with torch.no_grad():
        assert np.allclose(det.score_features(t, head).numpy(), expect, rtol=1e-10)


def test_nci_by_hand():
    head, (f, y), (t, _) = _head(10), _feats(40, 11), _feats(5, 12)
    det = _fit(NCI(alpha=0.05), f, y, head)
    w, b = _wb(head)
    mu, x = f.double().numpy().mean(0), t.double().numpy()
    pred = np.argmax(x @ w.T + b, axis=1)
    expect = [w[k] @ (v - mu) / np.linalg.norm(v - mu) + 0.05 * np.abs(v).sum() for v, k in zip(x, pred)]
    with torch.no_grad():
        assert np.allclose(det.score_features(t, head).numpy(), expect, rtol=1e-10)


def test_she_patterns_of_correct_predictions():
    (f, y), (t, _) = _feats(80, 14), _feats(6, 15)
    head = _nearest_mean_head(f, y)
    w, b = _wb(head)
    x = f.double().numpy()
    pred = np.argmax(x @ w.T + b, axis=1)
    assert all((pred == c).sum() >= 2 for c in range(C))
    lab = pred.copy()
    lab[np.flatnonzero(pred == 0)[0]] = 1  # one image labelled wrongly: left out of class 0's (and 1's) pattern
    ok = pred == lab
    patterns = np.stack([x[ok & (lab == c)].mean(0) for c in range(C)])
    xt = t.double().numpy()
    s = patterns[np.argmax(xt @ w.T + b, axis=1)]
    with torch.no_grad():
        for metric, expect in [("inner_product", (xt * s).sum(1)),
                               ("euclidean_distance", -np.linalg.norm(xt - s, axis=1)),
                               ("cos_similarity", (xt * s).sum(1) / np.linalg.norm(xt, axis=1)
                                / np.linalg.norm(s, axis=1))]:
            det = _fit(SHE(metric), f, torch.from_numpy(lab), head)
            assert np.allclose(det.score_features(t, head).numpy(), expect, rtol=1e-10), metric
    with pytest.raises(OodbenchError, match=r"SHE needs a correctly classified.*class\(es\) \[\d"):
        _fit(SHE(), f[:2], torch.from_numpy(lab[:2]), head)  # two images cannot cover four classes


# ------------------------------------------------------------------------------------------------ banks
def test_nnguide_by_hand():
    head, (f, y), (t, _) = _head(16), _feats(30, 17), _feats(5, 18)
    w, b = _wb(head)
    x, xt = f.double().numpy(), t.double().numpy()
    bank = x / np.linalg.norm(x, axis=1, keepdims=True) * _energy(x @ w.T + b)[:, None]
    sims = (xt / np.linalg.norm(xt, axis=1, keepdims=True)) @ bank.T
    expect = np.sort(sims, axis=1)[:, -3:].mean(1) * _energy(xt @ w.T + b)
    det = _fit(NNGuide(k=3, chunk=2), f, y, head)
    with torch.no_grad():
        assert np.allclose(det.score_features(t, head).numpy(), expect, rtol=1e-5)
        half = _fit(NNGuide(k=3, bank_fraction=0.5, seed=1), f, y, head)
        keep = torch.randperm(30, generator=torch.Generator().manual_seed(1))[:15].sort().values.numpy()
        sims = (xt / np.linalg.norm(xt, axis=1, keepdims=True)) @ bank[keep].T
        assert np.allclose(half.score_features(t, head).numpy(),
                           np.sort(sims, axis=1)[:, -3:].mean(1) * _energy(xt @ w.T + b), rtol=1e-5)
    with pytest.raises(OodbenchError, match="k=40 exceeds the 30 bank features"):
        _fit(NNGuide(k=40), f, y, head)


@pytest.mark.parametrize("kernel,power", [("cos_p", 1.0), ("cos_p", 2.0), ("cos", 1.0)])
def test_relation_by_hand(kernel, power):
    head, (f, y), (t, _) = _head(19), _feats(25, 20), _feats(5, 21)
    f = f - 1.2  # some negative cosines, clamped to 0
    t = t - 1.2
    w, b = _wb(head)
    x, xt = f.double().numpy(), t.double().numpy()
    pf, pt = _softmax(x @ w.T + b), _softmax(xt @ w.T + b)
    nf, nt = x / np.linalg.norm(x, axis=1, keepdims=True), xt / np.linalg.norm(xt, axis=1, keepdims=True)
    expect = []
    for i in range(len(xt)):
        total = 0.0
        for j in range(len(x)):
            k = max(0.0, nt[i] @ nf[j]) * (pt[i] @ pf[j] if kernel == "cos_p" else 1.0)
            total += k**power if k > 0.2 else 0.0
        expect.append(total)
    det = _fit(Relation(power=power, threshold=0.2, kernel=kernel, chunk=2), f, y, head)
    with torch.no_grad():
        assert np.allclose(det.score_features(t, head).numpy(), expect, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ Gaussians
def test_rmd_by_hand():
    head, (f, y), (t, _) = _head(22), _feats(200, 23), _feats(6, 24)
    det = _fit(RMD(), f, y, head)
    x, lab, xt = f.double().numpy(), y.numpy(), t.double().numpy()
    means = np.stack([x[lab == c].mean(0) for c in range(C)])
    prec = np.linalg.inv(sum(np.outer(v - means[c], v - means[c]) for v, c in zip(x, lab)) / len(x))
    mu0 = x.mean(0)
    prec0 = np.linalg.inv((x - mu0).T @ (x - mu0) / len(x))
    expect = [max(-(v - m) @ prec @ (v - m) for m in means) + (v - mu0) @ prec0 @ (v - mu0) for v in xt]
    assert np.allclose(det.score_features(t, head).numpy(), expect, rtol=1e-8)


def test_vim_residual_by_hand():
    head, (f, y), (t, _) = _head(25), _feats(100, 26), _feats(6, 27)
    det = _fit(ViMResidual(dim=3), f, y, head)
    w, b = _wb(head)
    x, xt = f.double().numpy(), t.double().numpy()
    u = -np.linalg.pinv(w) @ b
    evals, evecs = np.linalg.eigh((x - u).T @ (x - u) / len(x))
    ns = evecs[:, np.argsort(-evals)[3:]]  # complement of the 3 leading directions
    assert np.allclose(det.score_features(t, head).numpy(), -np.linalg.norm((xt - u) @ ns, axis=1), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("make,message", [
    (lambda: GEN(gamma=0), "GEN gamma must be > 0, got 0"),
    (lambda: GEN(M=0), "GEN M must be an integer >= 1"),
    (lambda: GEN(M=2.5), "GEN M must be an integer >= 1"),
    (lambda: SCALE(p=100), "SCALE p must be a percentile strictly between 0 and 100, got 100"),
    (lambda: SCALE(p=0), "SCALE p must be a percentile strictly between 0 and 100"),
    (lambda: VRA(low=0), "VRA low must be a percentile strictly between 0 and 100"),
    (lambda: VRA(high=100), "VRA high must be a percentile strictly between 0 and 100"),
    (lambda: VRA(low=90, high=60), "VRA low must be below high"),
    (lambda: VRA(gamma=-0.1), "VRA gamma must be >= 0, got -0.1"),
    (lambda: GradNorm(temperature=0), "GradNorm temperature must be > 0, got 0"),
    (lambda: SHE(metric="l2"), "SHE metric must be one of inner_product, euclidean_distance, cos_similarity"),
    (lambda: NNGuide(k=0), "NNGuide k must be an integer >= 1, got 0"),
    (lambda: NNGuide(bank_fraction=0), r"NNGuide bank_fraction must be in \(0, 1\], got 0"),
    (lambda: NNGuide(bank_fraction=1.5), r"NNGuide bank_fraction must be in \(0, 1\]"),
    (lambda: RMD(covariance="inv"), "RMD: covariance must be one of pinv, ridge, got 'inv'"),
    (lambda: Relation(power=0), "Relation power must be > 0, got 0"),
    (lambda: Relation(threshold=-1), "Relation threshold must be >= 0"),
    (lambda: Relation(kernel="rbf"), "Relation kernel must be one of cos_p, cos, got 'rbf'"),
    (lambda: NCI(alpha=-1), r"NCI alpha must be >= 0 \(weight of the L1 feature norm\), got -1"),
])
def test_bad_hyperparameters_are_one_line_errors(make, message):
    with pytest.raises(OodbenchError, match=message) as err:
        make()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("det", [TemperatureScaling(), KLMatching(), VRA(), FDBD(), NCI(), SHE(), NNGuide(),
                                 Relation(), RMD(), ViMResidual()], ids=lambda d: type(d).__name__)
def test_scoring_before_fit_says_so(det):
    assert det.needs_fit
    with pytest.raises(OodbenchError, match="fit"):
        if det.consumes == "logits":
            det.score_logits(LOGITS)
        else:
            det.score_features(torch.rand(2, D), _head())


def test_every_score_is_float64_and_finite_on_one_input():
    (f, y), (t, _) = _feats(60, 29), _feats(4, 30)
    head = _nearest_mean_head(f, y)
    y = torch.where(torch.arange(60) < 3, (y + 1) % C, y)  # three wrong labels: a finite temperature
    dets = [GEN(), Entropy(), TemperatureScaling(), KLMatching(), SCALE(), VRA(), GradNorm(), SHE(), NNGuide(),
            FDBD(), RMD(), ViMResidual(dim=3), Relation(), NCI(), VRA(score=Energy(2.0))]
    with torch.no_grad():
        for det in dets:
            if det.needs_fit:
                _fit(det, f, y, head)
            s = det.score_logits(head(t)) if det.consumes == "logits" else det.score_features(t, head)
            assert s.dtype == torch.float64 and s.shape == (4,) and torch.isfinite(s).all(), type(det).__name__
