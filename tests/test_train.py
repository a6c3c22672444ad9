"""Tests of oodbench.train: losses by hand, each method's effect on a tiny net, the loop's checkpoints, resume and
NaN handling, input errors, and a ``python train.py`` smoke run on the published DenseNet (CPU, < 60 s in all)."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from oodbench.data.base import ImageSet
from oodbench.errors import DataNotAvailable, OodbenchError
from oodbench.models import Classifier, load_classifier
from oodbench.models.base import OODNet
from oodbench.models.two_head import TwoHeadLinear, both_heads, to_two_head
from oodbench.paths import REPO_ROOT, resolve
from oodbench.train.data import EpochBatches, augment, load_outliers
from oodbench.train.loop import Settings, TrainingDiverged, cosine_factor, train
from oodbench.train.losses import (
    energy,
    energy_ft_loss,
    entropy,
    mcd_discrepancy,
    mcd_loss,
    mcd_score,
    oe_loss,
)
from oodbench.train.methods import MCD, EnergyFT, OutlierExposure

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


# --- losses against numbers worked out by hand -------------------------------------------------------

def test_energy_ft_loss_by_hand():
    # E([0, 0]) = -ln 2; hinge at m_in = -1: (1 - ln 2)^2. E([ln 3, 0]) = -ln 4; hinge at m_out = 0: (ln 4)^2.
    logits_in, logits_out = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]])
    assert energy(logits_in).item() == pytest.approx(-LN2)
    assert energy_ft_loss(logits_in, logits_out, -1.0, 0.0).item() == pytest.approx((1 - LN2) ** 2 + LN4 ** 2)
    # inactive hinges give exactly 0; a mean over the batch otherwise
    assert energy_ft_loss(torch.tensor([[10.0, 0.0]]), torch.tensor([[0.0, 0.0]]), -1.0, -5.0).item() == 0.0
    two = energy_ft_loss(torch.tensor([[0.0, 0.0], [10.0, 0.0]]), torch.tensor([[0.0, 0.0]]), -1.0, -5.0)
    assert two.item() == pytest.approx((1 - LN2) ** 2 / 2)


def test_oe_loss_by_hand():
    # uniform output: CE to uniform = ln 2; p = (3/4, 1/4): -(ln 3/4 + ln 1/4) / 2
    assert oe_loss(torch.tensor([[0.0, 0.0]])).item() == pytest.approx(LN2)
    skewed = -(math.log(0.75) + math.log(0.25)) / 2
    assert oe_loss(torch.tensor([[0.0, 0.0], [LN3, 0.0]])).item() == pytest.approx((LN2 + skewed) / 2)


def test_mcd_losses_by_hand():
    l1, l2 = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]])
    h2 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert entropy(l1).item() == pytest.approx(LN2)
    assert mcd_discrepancy(l1, l2).item() == pytest.approx(LN2 - h2)  # signed: H(p1) - H(p2)
    assert mcd_discrepancy(l2, l1).item() == pytest.approx(h2 - LN2)
    assert mcd_loss(l1, l2, 1.2).item() == pytest.approx(1.2 - (LN2 - h2))
    assert mcd_loss(l1, l2, 0.1).item() == 0.0
    assert mcd_score(l1, l2).item() == pytest.approx(0.5)  # |1/2 - 3/4| + |1/2 - 1/4|


def test_cosine_schedule():
    assert cosine_factor(0, 100, 0.1, 0.0) == 1.0
    assert cosine_factor(50, 100, 0.1, 0.0) == pytest.approx(0.5)
    assert cosine_factor(100, 100, 0.1, 1e-3) == pytest.approx(1e-2)


def test_bad_hyperparameters_are_errors():
    with pytest.raises(OodbenchError, match="m_in < m_out"):
        EnergyFT(m_in=-5, m_out=-5)
    with pytest.raises(OodbenchError, match="margin"):
        MCD(margin=0)


# --- a tiny network and tiny data --------------------------------------------------------------------

class TinyNet(OODNet):
    feature_map_names = ("conv", "final")

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, num_classes)
        self.feature_dim, self.num_classes = 8, num_classes

    def stages(self):
        return [self.conv, lambda x: F.relu(self.bn(x))]


def tiny_model(two_heads: bool = False, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    net = TinyNet()
    return Classifier(to_two_head(net) if two_heads else net, (0.5,) * 3, (0.25,) * 3)


def tiny_sets(n_in: int = 48, n_out: int = 48) -> tuple[ImageSet, ImageSet]:
    rng = np.random.default_rng(0)
    labels = np.arange(n_in) % 3
    images = rng.integers(0, 60, (n_in, 8, 8, 3)).astype(np.uint8)
    images[np.arange(n_in), :, :, labels] += 180  # class c = a bright channel c
    ood = rng.integers(0, 256, (n_out, 8, 8, 3)).astype(np.uint8)
    mk = lambda name, x, y: ImageSet(name, x, y, "test", len(x), np.arange(len(x)), name)  # noqa: E731
    return mk("tiny-id", images, labels), mk("tiny-ood", ood, None)


def pixels(data: ImageSet) -> torch.Tensor:
    return torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255


def run_tiny(model, method, tmp_path: Path, epochs=3, lr=0.05, meta=None, **kw) -> Path:
    id_set, ood = tiny_sets()
    batches = EpochBatches(id_set, ood, 16, 16, seed=0)
    settings = Settings(epochs=epochs, lr=lr, **kw)
    meta = meta or {"arch": "tiny", "num_classes": 3, "method": method.name, "mean": [0.5] * 3, "std": [0.25] * 3}
    return train(model, method, batches, settings, tmp_path, meta, torch.device("cpu"))


def test_batches_are_seeded_and_augmented():
    id_set, ood = tiny_sets()
    a, b = EpochBatches(id_set, ood, 16, 8, seed=1), EpochBatches(id_set, ood, 16, 8, seed=1)
    assert len(a) == 3
    for x, y in zip(a[1], b[1], strict=True):
        assert torch.equal(x, y)
    x_in, y_in, x_out = a[0]
    assert x_in.shape == (16, 3, 8, 8) and x_in.dtype == torch.uint8 and x_out.shape == (8, 3, 8, 8)
    a.set_epoch(2)
    assert not torch.equal(a[0][0], x_in)
    img = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    out = augment(img, np.random.default_rng(0), padding=1)
    assert out.shape == img.shape and out.dtype == np.uint8


def test_energy_ft_moves_energies_apart(tmp_path):
    model = tiny_model()
    id_set, ood = tiny_sets()
    with torch.no_grad():
        e_in0, e_out0 = energy(model.eval()(pixels(id_set))).mean(), energy(model(pixels(ood))).mean()
    # margins active from the start for both terms: ID energies ~ -ln 3 > m_in, outlier energies < m_out
    run_tiny(model, EnergyFT(m_in=-2.0, m_out=0.0, lam=1.0), tmp_path, lr=0.1)
    with torch.no_grad():
        e_in1, e_out1 = energy(model.eval()(pixels(id_set))).mean(), energy(model(pixels(ood))).mean()
    assert e_in1 < e_in0 - 1.0, (e_in0, e_in1)  # ID energy down (about -1.0 -> -3.4)
    assert e_out1 > e_out0 + 0.1, (e_out0, e_out1)  # outlier energy up (about -1.0 -> -0.7)
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,global_step,steps,lr") and len(log) == 4
    assert {"energy_reg", "e_in", "e_out", "train_acc"} <= set(log[0].split(","))


def test_oe_raises_outlier_entropy(tmp_path):
    _, ood = tiny_sets()

    def outlier_entropy_after(lam: float | None) -> float:
        model = tiny_model()
        with torch.no_grad():
            model.net.fc.weight.mul_(20)  # start confident, so there is entropy to gain
        if lam is not None:
            run_tiny(model, OutlierExposure(lam=lam), tmp_path / str(lam), lr=0.1)
        with torch.no_grad():
            return entropy(model.eval()(pixels(ood))).mean().item()

    h0, h_ce, h_oe = outlier_entropy_after(None), outlier_entropy_after(0.0), outlier_entropy_after(1.0)
    assert h_oe > h0 + 0.1 and h_oe > h_ce + 0.1, (h0, h_ce, h_oe)  # about 0.65 -> 0.93 (CE alone: lower)


def test_mcd_step_b_grows_ood_discrepancy(tmp_path):
    model = tiny_model(two_heads=True)
    _, ood = tiny_sets()
    heads = both_heads(model)
    assert isinstance(heads, TwoHeadLinear) and both_heads(model.head) is heads

    def l1_ood():
        with torch.no_grad():
            return mcd_score(*heads.both(model.eval().features(pixels(ood)))).mean().item()

    assert l1_ood() == 0.0  # both heads start as copies of one fc
    run_tiny(model, MCD(margin=1.0), tmp_path, epochs=1)
    first = l1_ood()
    run_tiny(model, MCD(margin=1.0), tmp_path / "more", epochs=2)
    assert first > 0.01 and l1_ood() > first, (first, l1_ood())
    with torch.no_grad():  # head 1 is what forward / head() return
        f = model.features(pixels(ood))
        assert torch.equal(model.head(f), heads.both(f)[0])


def test_mcd_detector_scores_negative_l1():
    from oodbench.detectors.mcd import MCDDiscrepancy

    model = tiny_model(two_heads=True)
    with torch.no_grad():
        model.net.fc.second.weight.add_(torch.randn(3, 8))
        f = torch.rand(5, 8)
        s = MCDDiscrepancy().score_features(f, model.net.fc)
        assert torch.allclose(s, -mcd_score(*model.net.fc.both(f)).double())
        assert torch.allclose(MCDDiscrepancy().score_features(f, model.head), s)  # a bound method works too
    with pytest.raises(OodbenchError, match="two-head"):
        MCDDiscrepancy().score_features(f, tiny_model().head)


class NaNAfter(EnergyFT):
    def __init__(self, calls: int) -> None:
        super().__init__(-4.0, 0.0, 1.0)
        self._left = calls

    def step(self, model, batch_in, batch_out):
        loss, logs = super().step(model, batch_in, batch_out)
        self._left -= 1
        return (loss * float("nan") if self._left < 0 else loss), logs


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2.*epoch_001\.pt") as err:
        run_tiny(tiny_model(), NaNAfter(calls=4), tmp_path)  # 3 steps per epoch: fails at the 2nd of epoch 2
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch_001.pt"]
    good = torch.load(tmp_path / "epoch_001.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())


def test_resume_continues_and_refuses_another_arch(tmp_path):
    method = EnergyFT(-4.0, 0.0, 1.0)
    run_tiny(tiny_model(), method, tmp_path, epochs=3, keep_last=None)
    with pytest.raises(OodbenchError, match="resume=true"):
        run_tiny(tiny_model(), method, tmp_path, epochs=3)
    for name in ("epoch_003.pt", "final.pt"):  # a run interrupted during its third epoch
        (tmp_path / name).unlink()
    final = run_tiny(tiny_model(), method, tmp_path, epochs=3, resume=True, keep_last=1)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch_003.pt", "final.pt", "weights.pt"]
    ckpt = torch.load(final, weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["meta"]["global_step"] == 9
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 4
    other = {"arch": "wrn40_2", "num_classes": 3, "method": "energy_ft", "mean": [0.5] * 3, "std": [0.25] * 3}
    with pytest.raises(OodbenchError, match="cannot resume.*arch is 'tiny'") as err:
        run_tiny(tiny_model(), method, tmp_path, epochs=3, resume=True, meta=other)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change", [{"lr": 0.1}, {"epochs": 4}, {"weight_decay": 1e-3}])
def test_resume_with_another_schedule_is_refused(tmp_path, change):
    """A changed lr / epochs / weight decay would continue on a mixed schedule and record values it never used:
    one line naming the differing field, and the saved run is left as it was."""
    method = EnergyFT(-4.0, 0.0, 1.0)
    run_tiny(tiny_model(), method, tmp_path, epochs=3)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    args = {"epochs": 3, "lr": 0.05, **change}
    with pytest.raises(OodbenchError, match=f"differs from the saved one in settings.{next(iter(change))}") as err:
        run_tiny(tiny_model(), method, tmp_path, resume=True, **args)
    assert "\n" not in str(err.value) and "another out=" in str(err.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_missing_outlier_pool_says_where(tmp_path):
    with pytest.raises(DataNotAvailable, match=r"outlier pool not available: put it at .*tin-outliers\.tar\.gz"):
        load_outliers("tinyimagenet/tin-outliers.tar.gz", tmp_path, tmp_path, None, "*", 32, "cifar10")


# --- the command line, on the published DenseNet ---------------------------------------------------------

@pytest.fixture(scope="module")
def shared() -> tuple[Path, Path]:
    data, weights = resolve("data"), resolve("weights")
    if not (data / "cifar10" / "cifar10-exact-subset.npz").is_file():
        pytest.skip(f"shared data not found at {data} (set OODBENCH_DATA)")
    if not (weights / "odin_densenet10.pth").is_file():
        pytest.skip(f"shared weights not found at {weights} (set OODBENCH_WEIGHTS)")
    return data, weights


def fake_outlier_archive(path: Path, n: int = 6) -> Path:
    """A few 64x64 JPEGs laid out like tin-outliers.tar.gz (the real pool takes ~10 s to decode once)."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)).save(buf, format="JPEG")
            info = tarfile.TarInfo(f"tin-outliers/n0000000{i % 2}/images/x_{i}.JPEG")
            info.size = buf.tell()
            buf.seek(0)
            tar.addfile(info, buf)
    return path


def train_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    archive = fake_outlier_archive(tmp_path / "outliers.tar.gz")
    cmd = [sys.executable, "train.py", "device=cpu", "batch_size=2", "outlier_batch_size=2",
           f"outliers.archive={archive}", "outliers.sha256=null", f"paths.cache={tmp_path / 'cache'}", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_energy_ft_smoke_run_writes_loadable_checkpoint(tmp_path, shared):
    out = tmp_path / "run"
    res = train_cli(tmp_path, "method=energy_ft", "init=odin_densenet10", "max_steps=2", f"out={out}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"final checkpoint: {out / 'final.pt'}" in res.stdout
    assert f"arch.checkpoint={out / 'final.pt'} detector=energy" in res.stdout
    model, prov = load_classifier(None, path=out / "final.pt")
    assert prov["arch"] == "densenet100" and prov["num_classes"] == 10 and prov["fmt"] == "oodbench"
    meta = torch.load(out / "final.pt", weights_only=True)["meta"]
    assert meta["method"] == "energy_ft" and meta["global_step"] == 2 and meta["data"]["id_count"] == 5085
    assert meta["init"]["name"] == "odin_densenet10" and len(meta["init_sha256"]) == 64
    assert meta["hyperparams"]["method"] == {"m_in": -23.0, "m_out": -5.0, "lam": 0.1}
    assert isinstance(model(torch.rand(2, 3, 32, 32)), torch.Tensor)


@pytest.mark.slow
def test_cli_bad_margins_is_one_line_error(tmp_path, shared):
    res = train_cli(tmp_path, "method=energy_ft", "method.m_in=-5", f"out={tmp_path / 'run'}")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("oodbench: error: energy_ft needs m_in < m_out")
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_mcd_init_from_published_densenet_loads_as_two_head(tmp_path, shared):
    from oodbench.train.app import init_model

    _, weights = shared
    model, info = init_model("densenet100", "densenet100_mcd", 10, "odin_densenet10", "odin", weights)
    assert info["name"] == "odin_densenet10" and isinstance(model.net.fc, TwoHeadLinear)
    meta = {"arch": "densenet100_mcd", "num_classes": 10, "method": "mcd",
            "mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist()}
    id_set, ood = tiny_sets(n_in=2, n_out=2)
    big = lambda s: ImageSet(s.name, np.repeat(np.repeat(s.images, 4, 1), 4, 2), s.labels, "t",  # noqa: E731
                             len(s), s.indices, s.name)
    final = train(model, MCD(), EpochBatches(big(id_set), big(ood), 2, 2, 0), Settings(epochs=1, lr=0.01),
                  tmp_path, meta, torch.device("cpu"))
    loaded, prov = load_classifier(None, path=final)
    assert prov["arch"] == "densenet100_mcd" and isinstance(loaded.net.fc, TwoHeadLinear)
    assert prov["training"]["method"] == "mcd" and prov["training"]["epoch"] == 1  # rows carry it, no path regex
