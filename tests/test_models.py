"""Tests of oodbench.models: architectures, safe legacy loading, registry errors, real accuracy (CPU)."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from oodbench.errors import CheckpointError
from oodbench.models import (
    CHECKPOINTS,
    Classifier,
    DenseNet3,
    WideResNet,
    build_arch,
    load_classifier,
    read_state_dict,
)
from oodbench.models.legacy import LEGACY_MAGIC, LEGACY_PROTOCOL, load_legacy
from oodbench.paths import resolve

ODIN10 = "odin_densenet10.pth"
DICE10 = "dice_cifar10_densenet_checkpoint_100.pth.tar"


@pytest.fixture(scope="module")
def weights() -> Path:
    root = resolve("weights")
    if not (root / ODIN10).is_file():
        pytest.skip(f"shared weights not found at {root} (set OODBENCH_WEIGHTS)")
    return root


def _subset(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    file = resolve("data") / name / f"{name}-exact-subset.npz"
    if not file.is_file():
        pytest.skip(f"shared data not found at {file} (set OODBENCH_DATA)")
    d = np.load(file)
    x = torch.from_numpy(d["test_images"][:n]).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(d["test_labels_all"][d["test_index"][:n]]).long()
    return x, y


def _legacy_file(path: Path, payload: bytes) -> Path:
    """A legacy-format torch file whose object pickle is ``payload``."""
    head = b"".join(pickle.dumps(v, protocol=2) for v in
                    (LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": 1001, "little_endian": True}))
    path.write_bytes(head + payload + pickle.dumps([], protocol=2))
    return path


# --- architectures and normalization (no shared files needed) ---------------------------------------

@pytest.mark.parametrize("net, dim, maps", [
    (DenseNet3(100, 10), 342, {"conv1": 24, "trans1": 108, "trans2": 150, "final": 342}),
    (WideResNet(40, 100, 2), 128, {"conv1": 16, "block1": 32, "block2": 64, "final": 128}),
])
def test_interface(net: torch.nn.Module, dim: int, maps: dict[str, int]) -> None:
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = net.features(x)
        assert feats.shape == (2, dim) and net.feature_dim == dim
        assert torch.allclose(net.head(feats), net(x), atol=1e-5)
        fm = net.feature_maps(x)
    assert list(fm) == list(net.feature_map_names) == list(maps)
    assert {k: v.shape[1] for k, v in fm.items()} == maps
    assert torch.allclose(fm["final"].mean((2, 3)), feats, atol=1e-5)
    with pytest.raises(ValueError, match="unknown feature maps"):
        net.feature_maps(x, ["nope"])


def test_wrn_key_layout() -> None:
    keys = set(build_arch("wrn40_2", 10).state_dict())
    assert {"conv1.weight", "block1.layer.0.convShortcut.weight", "block3.layer.5.conv2.weight",
            "bn1.running_var", "fc.weight"} <= keys
    assert "block1.layer.1.convShortcut.weight" not in keys


def test_classifier_normalizes_first() -> None:
    torch.manual_seed(0)
    net = DenseNet3(100, 10).eval()
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    model = Classifier(net, mean, std).eval()
    x = torch.rand(2, 3, 32, 32)
    z = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), net(z), atol=1e-6)
        assert torch.allclose(model.features(x), net.features(z), atol=1e-6)
        assert torch.allclose(model.feature_maps(x, ["trans1"])["trans1"], net.feature_maps(z, ["trans1"])["trans1"])
    assert model.feature_dim == 342 and model.num_classes == 10


def test_trainer_format_and_module_prefix(tmp_path: Path) -> None:
    net = build_arch("wrn40_2", 10)
    meta = {"arch": "wrn40_2", "num_classes": 10, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    torch.save({"state_dict": net.state_dict(), "meta": meta}, tmp_path / "mine.pt")
    model, prov = load_classifier(None, path=tmp_path / "mine.pt")
    assert prov["fmt"] == "oodbench" and prov["arch"] == "wrn40_2" and prov["std"] == (0.25,) * 3
    assert not model.training
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "dp.pt")
    model, prov = load_classifier("dp", path=tmp_path / "dp.pt", arch="wrn40_2", normalization="odin")
    assert prov["fmt"] == "state_dict" and prov["num_classes"] == 10 and prov["name"] == "dp"
    with pytest.raises(CheckpointError, match="does not say its arch"):
        load_classifier(None, path=tmp_path / "dp.pt")


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    path = _legacy_file(tmp_path / "evil.pth", payload)
    with pytest.raises(CheckpointError, match=r"refusing to load .*os\.system"):
        load_legacy(path)
    with pytest.raises(CheckpointError, match=r"os\.system"):
        load_classifier(None, path=path, arch="densenet100", normalization="odin")
    assert not marker.exists()
    # a builtin reached through the allowed module namespace is refused too
    path = _legacy_file(tmp_path / "evil2.pth", b"cbuiltins\neval\n(S'1'\ntR.")
    with pytest.raises(CheckpointError, match="builtins.eval"):
        read_state_dict(path)


# --- the published files ----------------------------------------------------------------------------

def test_legacy_matches_dice_layout(weights: Path) -> None:
    odin, _, fmt = read_state_dict(weights / ODIN10)
    dice, _, dice_fmt = read_state_dict(weights / DICE10)
    assert (fmt, dice_fmt) == ("legacy_module", "checkpoint_dict")
    dice = {k: v for k, v in dice.items() if not k.endswith("num_batches_tracked")}
    assert list(odin) == list(dice) and len(odin) == 497
    assert all(odin[k].shape == dice[k].shape and odin[k].dtype == torch.float32 for k in odin)
    net = DenseNet3(100, 10)
    net.load_state_dict(odin, strict=True)
    assert torch.equal(net.fc.bias, odin["fc.bias"])
    svhn, _, svhn_fmt = read_state_dict(weights / "mahalanobis_densenet_svhn.pth")
    assert svhn_fmt == "legacy_state_dict" and list(svhn) == list(odin)


@pytest.mark.slow
@pytest.mark.parametrize("name, data, floor", [
    ("odin_densenet10", "cifar10", 0.90),
    ("dice_densenet_cifar10", "cifar10", 0.88),
    ("odin_densenet100", "cifar100", 0.65),
])
def test_accuracy(weights: Path, name: str, data: str, floor: float) -> None:
    x, y = _subset(data, 200)
    model, prov = load_classifier(name, weights)
    assert prov["sha256"] == CHECKPOINTS[name].sha256 and prov["num_classes"] == CHECKPOINTS[name].num_classes
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc >= floor, f"{name}: top-1 {acc:.3f} on the first 200 {data} test images"


def test_errors(weights: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not found at .*dropbox.*OODBENCH_WEIGHTS"):
        load_classifier("odin_densenet10", tmp_path)
    with pytest.raises(CheckpointError, match=r"unknown checkpoint 'nope'; choose from .*odin_densenet10"):
        load_classifier("nope", weights)
    with pytest.raises(CheckpointError, match="unknown architecture 'vgg'"):
        load_classifier("odin_densenet10", weights, arch="vgg")
    with pytest.raises(CheckpointError, match="has 10 output classes but arch densenet100 was asked with 100"):
        load_classifier("odin_densenet10", weights, num_classes=100)
    with pytest.raises(CheckpointError, match=r"keys do not match arch wrn40_2: missing \[.*unexpected"):
        load_classifier("odin_densenet10", weights, arch="wrn40_2")
    bad = tmp_path / "flipped.pth"
    raw = bytearray((weights / ODIN10).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256 .* corrupt or another checkpoint"):
        load_classifier("odin_densenet10", weights, path=bad)
    short = tmp_path / "short.pth"
    short.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_classifier("odin_densenet10", weights, path=short, verify_sha256=False)
    archive = tmp_path / "densenet10.pth.tar.gz"
    with open(weights / ODIN10, "rb") as src, gzip.open(archive, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with pytest.raises(CheckpointError, match="extract the .pth"):
        load_classifier(None, path=archive, arch="densenet100", normalization="odin")
