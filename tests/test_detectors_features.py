"""Feature-space detectors (ASH, ReAct, DICE, Mahalanobis, its ensemble, KNN, ViM) against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from oodbench.data.files import sha256_file
from oodbench.detectors import ASH, DICE, KNN, MSP, ODIN, Energy, FitData, Mahalanobis, MahalanobisEnsemble, ReAct, ViM
from oodbench.detectors.base import CheckpointReference
from oodbench.detectors.shaping import Chain, linear_params
from oodbench.errors import OodbenchError
from oodbench.metrics import auroc
from oodbench.models import OODNet
from oodbench.models.normalized import Classifier

X = torch.tensor([[0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [5.0, 0, 0, 1, 0, 0, 0, 0, 2, 3]])


def _linear(d: int, c: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d, c)


def _fit(feats: torch.Tensor, labels: torch.Tensor, head: nn.Module | None) -> FitData:
    return FitData(feats, labels, None, head, "test")  # type: ignore[arg-type]


def _gauss(n: int, d: int, seed: int, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative features around ``classes`` random centres, labels cycling through the classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    return (3 * torch.randn(classes, d, generator=g)[y] + torch.randn(n, d, generator=g)).abs(), y


def test_ash_p_b_s_by_hand():
    # p = 70, D = 10 → k = 10 − round(7) = 3 kept. Row 0 keeps 7, 8, 9 (s1 = 45, s2 = 24);
    # row 1 keeps 5, 2, 3 at indices 0, 8, 9 (s1 = 11, s2 = 10).
    assert ASH("p", 70).shape(X).tolist() == [[0] * 7 + [7, 8, 9], [5, 0, 0, 0, 0, 0, 0, 0, 2, 3]]
    b = ASH("b", 70).shape(X)  # kept values → s1 / k
    assert b[0].tolist() == [0] * 7 + [15] * 3 and b[1].tolist() == pytest.approx([11 / 3] + [0] * 7 + [11 / 3] * 2)
    s = ASH("s", 70).shape(X)  # kept values × exp(s1 / s2)
    assert s[0, 7:].tolist() == pytest.approx([v * math.exp(45 / 24) for v in (7, 8, 9)], rel=1e-6)
    assert s[1].tolist() == pytest.approx([v * math.exp(1.1) for v in [5, 0, 0, 0, 0, 0, 0, 0, 2, 3]], rel=1e-6)
    assert (ASH("p", 65).shape(X)[0] > 0).sum() == 4  # round(6.5) = 6 (half to even, as np.round) → k = 4


def test_ash_rand_is_seeded_and_keeps_topk_positions():
    f = torch.rand(5, 20)
    a, b = ASH("rand", 80, seed=3).shape(f), ASH("rand", 80, seed=3).shape(f)
    assert torch.equal(a, b) and not torch.equal(a, ASH("rand", 80, seed=4).shape(f))
    assert torch.equal(a > 0, ASH("p", 80).shape(f) > 0) and float(a.max()) < 10


def test_composition_with_any_logit_score():
    head, f = _linear(10, 4), torch.rand(6, 10)
    msp, energy = ASH("s", 60, score=MSP()), ASH("s", 60)
    with torch.no_grad():
        shaped_logits = head(ASH("s", 60).shape(f))
        assert torch.allclose(msp.score_features(f, head), MSP().score_logits(shaped_logits))
        assert torch.allclose(energy.score_features(f, head), Energy().score_logits(shaped_logits))
        assert not torch.allclose(msp.score_features(f, head), energy.score_features(f, head))
    assert msp.metric_hints() == {"softmax_temperature": 1.0} and energy.metric_hints() == {}
    assert ASH(score=ODIN(1000, 0.0)).metric_hints() == {"softmax_temperature": 1000.0}
    assert msp.params == {"score": "MSP()", "variant": "s", "p": 60.0, "seed": 0}
    with pytest.raises(OodbenchError, match="epsilon=0"):
        ASH(score=ODIN(1000, epsilon=0.001))


@pytest.mark.parametrize("make", [lambda: ASH("p", 0), lambda: ASH("b", 100), lambda: ASH("s", -5),
                                  lambda: ASH("x", 50), lambda: ReAct(100), lambda: DICE(p=150)])
def test_out_of_range_hyperparameters(make):
    with pytest.raises(OodbenchError, match="between 0 and 100|variant"):
        make()


def test_react_clips_at_train_percentile():
    head, (f, y), det = _linear(8, 3), _gauss(50, 8, 0), ReAct(90)
    with pytest.raises(OodbenchError, match="fit"):
        det.score_features(f, head)
    det.fit(_fit(f, y, head))
    c = float(np.percentile(f.numpy().ravel(), 90))
    assert det.params["threshold"] == pytest.approx(c)
    with torch.no_grad():
        expect = torch.logsumexp(head(torch.clamp(2 * f[:7], max=c)).double(), 1)
        assert torch.allclose(det.score_features(2 * f[:7], head), expect)


def test_dice_mask_and_logits(tmp_path):
    head, (f, y), det = _linear(20, 10), _gauss(60, 20, 1), DICE(p=90)
    assert det.needs_fit
    det.fit(_fit(f, y, head))
    w, b, m = head.weight.detach().double(), head.bias.detach().double(), f.double().mean(0)
    mask = det.mask(head.weight.detach())
    assert int((~mask).sum()) == round(0.9 * 200)  # 90 % of the 10 × 20 weights are zeroed
    assert set(np.flatnonzero(mask.numpy())) == set(np.argsort((w * m).numpy().ravel())[-20:])  # largest V = m ⊙ W
    t = f[:5].double()
    direct = [[sum(mask[c, j] * w[c, j] * t[i, j] for j in range(20)) + b[c] for c in range(10)] for i in range(5)]
    with torch.no_grad():
        logits = det.logits(f[:5], head)
        assert np.allclose(logits.numpy(), np.array(direct), atol=1e-5)
        assert torch.allclose(det.score_features(f[:5], head), torch.logsumexp(logits.double(), 1))
    np.save(tmp_path / "stats.npy", m.numpy())
    from_file = DICE(p=90, feature_stats=str(tmp_path / "stats.npy"))
    from_file.bind(CheckpointReference("ck", tmp_path / "elsewhere"))
    assert not from_file.needs_fit and torch.equal(from_file.mask(head.weight.detach()), mask)
    assert from_file.params["mean_feature"].startswith("stats.npy (sha256 ")
    assert from_file.inputs() == {"dice_mean_feature": sha256_file(tmp_path / "stats.npy")}
    with pytest.raises(OodbenchError, match="20-d"):
        from_file.mask(torch.zeros(3, 7))
    with pytest.raises(OodbenchError, match="not found.*missing.npy; give an existing"):
        DICE(feature_stats="missing.npy").bind(CheckpointReference("ck", tmp_path))


def test_dice_uses_the_published_mean_feature_of_the_checkpoint(tmp_path):
    """auto: the checkpoint's published full-training-set mean (DICE's feat_stat.npy, as the official code) when
    the registry names one, found in the run's weights dir; else fit here. A relative path honours paths.weights."""
    (tmp_path / "stats").mkdir()
    np.save(tmp_path / "stats" / "m.npy", np.arange(20.0))
    published = CheckpointReference("ck", tmp_path, tmp_path / "stats" / "m.npy", "https://example.org/m.npy")
    auto = DICE()
    auto.bind(published)
    assert not auto.needs_fit and auto.params["mean_feature"].startswith("m.npy (sha256 ")
    relative = DICE(feature_stats="stats/m.npy")
    relative.bind(CheckpointReference("ck", tmp_path))  # no published stats, but the path is under paths.weights
    assert not relative.needs_fit
    for det in (DICE(), DICE(feature_stats="fit")):
        det.bind(CheckpointReference("ck", tmp_path) if det.feature_stats is None else published)
        assert det.needs_fit  # nothing published (auto), or fitting asked for (fit)
    missing = CheckpointReference("ck", tmp_path, tmp_path / "nope.npy", "https://example.org/nope.npy")
    with pytest.raises(OodbenchError, match="from https://example.org/nope.npy or set detector.feature_stats=fit"):
        DICE().bind(missing)
    chain = Chain([ReAct(90)], DICE())
    chain.bind(published)
    assert chain.then.params["mean_feature"].startswith("m.npy")


def test_registry_names_dice_published_stats_for_dice_checkpoints():
    from oodbench.models.registry import CHECKPOINTS

    assert {n for n, s in CHECKPOINTS.items() if s.mean_feature} == {
        "dice_densenet_cifar10", "dice_densenet_cifar100", "tv_resnet50_imagenet"}


def test_linear_params_from_module_method_or_probe():
    head, like = _linear(6, 3), torch.zeros(1, 6)
    w, b = linear_params(head, like)
    assert torch.equal(w, head.weight) and torch.equal(b, head.bias)
    pw, pb = linear_params(lambda z: head(z), like)  # no nn.Linear to read: probed with unit vectors
    assert torch.allclose(pw, head.weight, atol=1e-6) and torch.allclose(pb, head.bias, atol=1e-6)
    with pytest.raises(OodbenchError, match="linear"):
        linear_params(lambda z: torch.relu(head(z)) ** 2, like)


def test_mahalanobis_equals_numpy():
    (f, y), (t, _), det = _gauss(120, 5, 2), _gauss(9, 5, 3), Mahalanobis()
    det.fit(_fit(f, y, None))
    x, lab = f.double().numpy(), y.numpy()
    means = np.stack([x[lab == c].mean(0) for c in range(3)])
    prec = np.linalg.inv(sum(np.outer(v - means[c], v - means[c]) for v, c in zip(x, lab)) / len(x))
    expect = [max(-(v - mu) @ prec @ (v - mu) for mu in means) for v in t.double().numpy()]
    assert np.allclose(det.score_features(t, None).numpy(), expect, rtol=1e-8)


def test_singular_covariance_is_regularized_with_a_warning():
    (f, y), det = _gauss(8, 12, 4), Mahalanobis(covariance="ridge")  # 8 samples in 12-d: rank ≤ 5
    with pytest.warns(RuntimeWarning, match="singular.*regularized"):
        det.fit(_fit(f, y, None))
    assert torch.isfinite(det.score_features(torch.rand(4, 12), None)).all()
    with pytest.raises(OodbenchError, match="Mahalanobis: covariance must be one of pinv, ridge, got 'inverse'"):
        Mahalanobis(covariance="inverse")


def test_singular_covariance_is_pseudo_inverted_as_the_official_code():
    """Default: Σ⁺ = sklearn's EmpiricalCovariance().precision_ (the official sample_estimator), on a rank-5 Σ."""
    from sklearn.covariance import EmpiricalCovariance

    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    f = torch.randn(60, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 8, generator=g, dtype=torch.float64)
    det = Mahalanobis()
    det.fit(_fit(f, y, None))
    means = torch.stack([f[y == c].mean(0) for c in range(3)])
    precision = EmpiricalCovariance(assume_centered=False).fit((f - means[y]).numpy()).precision_
    t = f[:6] + 0.1 * torch.randn(6, 8, generator=g, dtype=torch.float64)
    expect = [max(-(v - m) @ precision @ (v - m) for m in means.numpy()) for v in t.numpy()]
    assert np.allclose(det.score_features(t, None).numpy(), expect, rtol=1e-6)


def test_knn_equals_brute_force():
    (f, y), (t, _), det = _gauss(80, 6, 5), _gauss(11, 6, 6), KNN(k=7, chunk=4)
    det.fit(_fit(f, y, None))
    bank = F.normalize(f.double(), dim=1).numpy()
    expect = [-np.sort(np.linalg.norm(bank - v / np.linalg.norm(v), axis=1))[6] for v in t.double().numpy()]
    assert np.allclose(det.score_features(t, None).numpy(), expect, atol=1e-5)
    with pytest.raises(OodbenchError, match="exceeds"):
        KNN(k=500).fit(_fit(f, y, None))


def test_vim_equals_numpy():
    head, (f, y), (t, _), det = _linear(8, 3, seed=7), _gauss(100, 8, 7), _gauss(6, 8, 8), ViM(dim=4)
    det.fit(_fit(f, y, head))
    w, b = head.weight.detach().double().numpy(), head.bias.detach().double().numpy()
    x, tt = f.double().numpy(), t.double().numpy()
    u = -np.linalg.pinv(w) @ b
    evals, evecs = np.linalg.eigh((x - u).T @ (x - u) / len(x))
    ns = evecs[:, np.argsort(-evals)[4:]]  # complement of the 4 leading directions
    alpha = (x @ w.T + b).max(1).mean() / np.linalg.norm((x - u) @ ns, axis=1).mean()
    lt = tt @ w.T + b
    energy = lt.max(1) + np.log(np.exp(lt - lt.max(1, keepdims=True)).sum(1))
    expect = energy - alpha * np.linalg.norm((tt - u) @ ns, axis=1)
    assert np.allclose(det.score_features(t, head).numpy(), expect, rtol=1e-6)
    assert [ViM().principal_dim(n) for n in (342, 768, 2048)] == [171, 512, 1000]
    with pytest.raises(OodbenchError, match="ViM dim"):
        ViM(dim=8).principal_dim(8)


@pytest.mark.parametrize("det", [Mahalanobis(), KNN(k=10)], ids=["mahalanobis", "knn"])
def test_toy_blobs_are_separated(det):
    (f, y), (t, _) = _gauss(300, 16, 9), _gauss(200, 16, 9)  # ID: 3 clusters; OOD: one far cluster
    ood = torch.randn(200, 16, generator=torch.Generator().manual_seed(10)) + 12
    det.fit(_fit(f, y, None))
    assert auroc(det.score_features(t, None).numpy(), det.score_features(ood, None).numpy()) > 0.95


class _TinyNet(OODNet):
    feature_map_names = ("a", "b")

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1, stride=2)
        self.fc, self.feature_dim, self.num_classes = nn.Linear(6, 3), 6, 3

    def stages(self):
        return [lambda x: torch.tanh(self.c1(x)), lambda x: torch.tanh(self.c2(x))]


def _images(n: int, seed: int, ood: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g, y = torch.Generator().manual_seed(seed), torch.arange(n) % 3
    base = torch.rand(n, 3, 8, 8, generator=g) if ood else F.one_hot(y, 3).float()[:, :, None, None]
    return (0.7 * base + 0.15 * torch.rand(n, 3, 8, 8, generator=g)).clamp(0, 1), y


def test_mahalanobis_ensemble_layers_noise_and_weights():
    model = Classifier(_TinyNet(), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
    (x, y), (val, _), (ood, _) = _images(90, 0), _images(60, 1), _images(60, 2, ood=True)
    det = MahalanobisEnsemble(epsilon=0.0)
    with pytest.raises(OodbenchError, match="fit_layers"):
        det.layer_scores(model, val)
    det.fit_layers(model, x, y, batch_size=32)
    s0 = det.layer_scores(model, val)
    for i, name in enumerate(("a", "b")):  # ε = 0: column l is the Mahalanobis score on layer l's pooled map
        pooled = lambda z, k=name: model.feature_maps(z, [k])[k].mean(dim=(2, 3)).detach()  # noqa: E731
        ref = Mahalanobis()
        ref.fit(_fit(pooled(x), y, None))
        assert torch.allclose(s0[:, i], ref.score_features(pooled(val), None))
    other = MahalanobisEnsemble(epsilon=0.0)
    other.fit_layers(model, zip(x.split(40), y.split(40)))  # an iterable of (x, y) batches works the same
    assert torch.allclose(other.layer_scores(model, val), s0)
    with pytest.raises(OodbenchError, match="fit_weights"):
        det.score_batch(model, val)
    noisy = MahalanobisEnsemble(epsilon=0.002)
    noisy._gauss = det._gauss
    assert (noisy.layer_scores(model, val) > s0).float().mean() > 0.9  # the step raises the confidence score
    alpha = det.fit_weights(s0, det.layer_scores(model, ood))
    assert det.layer_weights == pytest.approx(alpha.tolist())
    s_id, s_ood = det.score_batch(model, val), det.score_batch(model, ood)
    assert torch.allclose(s_id, s0 @ torch.tensor(alpha) + det.bias)
    assert auroc(s_id.numpy(), s_ood.numpy()) > 0.95


@pytest.fixture(scope="module")
def cifar_features(shared_data, shared_weights):
    """ODIN's CIFAR-10 DenseNet: 300 train / 200 test images vs 200 N(0.5, 1) noise images (clipped)."""
    from oodbench.models import load_classifier

    model, _ = load_classifier("odin_densenet10", shared_weights)
    d = np.load(shared_data / "cifar10" / "cifar10-exact-subset.npz")
    pixels = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    noise = (0.5 + torch.randn(200, 3, 32, 32, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    sets = (pixels(d["train_images"][:300]), pixels(d["test_images"][:200]), noise)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches on one thread: several times faster on a busy 2-core CPU
    try:
        with torch.inference_mode():
            train, test, ood = (torch.cat([model.features(b) for b in s.split(10)]) for s in sets)
        labels = torch.from_numpy(d["train_labels_all"][d["train_index"][:300]]).long()
        yield _fit(train, labels, model.head), test, ood, model.head
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("det", [Mahalanobis(), KNN(), ViM(), ReAct(), DICE(), ASH("s", 90)],
                         ids=["mahalanobis", "knn", "vim", "react", "dice", "ash_s"])
def test_real_cifar10_vs_gaussian_noise(cifar_features, det):
    fit, test, ood, head = cifar_features
    if det.needs_fit:
        det.fit(fit)
    with torch.no_grad():
        s_id, s_ood = det.score_features(test, head).numpy(), det.score_features(ood, head).numpy()
    assert np.isfinite(s_id).all() and np.isfinite(s_ood).all()
    if isinstance(det, (Mahalanobis, KNN)):
        assert auroc(s_id, s_ood) > 0.9
