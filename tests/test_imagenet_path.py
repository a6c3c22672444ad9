"""The ImageNet path on tiny synthetic folders and randomly initialised torchvision networks (no real data or
weights needed): lazy class-folder loading, the MOS OOD folder loader, the ResNet-50 / MobileNetV2 wrappers,
checkpoint lookup (weights dir, torch hub cache, sha256 prefix) and one end-to-end ``run.py`` call."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image

import oodbench.data.lazy as lazy
from oodbench.data.base import protocol_subset
from oodbench.data.files import sha256_file as sha256_of
from oodbench.data.imagenet import load_imagenet_val, load_ood_folder
from oodbench.data.lazy import FolderImages
from oodbench.errors import CheckpointError, DataNotAvailable
from oodbench.models.registry import (
    ARCHS,
    CHECKPOINTS,
    NORMALIZATIONS,
    load_classifier,
    load_torchvision_classifier,
    locate_weights,
)
from oodbench.models.torchvision_nets import (
    TorchvisionMobileNetV2,
    TorchvisionResNet50,
    check_hub_prefix,
    hub_hash_prefix,
)
from oodbench.paths import REPO_ROOT

WNIDS = ["n01440764", "n01443537", "n01484850"]
SIZES = [(300, 260), (260, 300), (333, 500), (257, 256), (480, 301), (256, 256)]


def _jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def _tree(root: Path, classes: list[str], per_class: int, ood: int) -> Path:
    """``root/imagenet/val/<wnid>/*.JPEG`` (created in reverse order: sorting must not depend on it) and
    ``root/iNaturalist/images/*.jpg``."""
    k = 0
    for wnid in reversed(classes):
        for j in range(per_class):
            _jpeg(root / "imagenet" / "val" / wnid / f"ILSVRC2012_val_{wnid}_{j}.JPEG", SIZES[k % len(SIZES)], k)
            k += 1
    for j in range(ood):
        _jpeg(root / "iNaturalist" / "images" / f"{j:04d}.jpg", SIZES[(k + j) % len(SIZES)], 100 + j)
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = _tree(tmp_path_factory.mktemp("data"), WNIDS, per_class=2, ood=2)
    (root / "imagenet" / "val" / WNIDS[0] / "README.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory) -> Path:
    """A random torchvision ResNet-50 (1000 classes) saved as a plain state dict, like torchvision's files."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random_resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


# --- data -------------------------------------------------------------------------------------------------


def test_imagenet_val_labels_shapes_and_laziness(data_dir, monkeypatch):
    calls = []
    real = lazy.decode_file
    monkeypatch.setattr(lazy, "decode_file", lambda *a: calls.append(a[0]) or real(*a))
    ds = load_imagenet_val("imagenet", str(data_dir))
    assert calls == [], "nothing may be decoded when the set is loaded"
    assert isinstance(ds.images, FolderImages) and ds.images.dtype == np.uint8
    assert ds.images.shape == (6, 224, 224, 3) and len(ds) == 6 and ds.n_total == 6
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1, 2, 2])  # sorted wnids, as ImageFolder
    assert [p.parent.name for p in ds.images.files] == [w for w in WNIDS for _ in range(2)]
    assert "README.txt" not in {p.name for p in ds.images.files}
    assert any("3 class folders" in n for n in ds.notes)  # a partial ImageNet is said so

    sub = protocol_subset(ds, max_images=4, seed=0)  # select on the whole set stays lazy
    assert calls == [] and isinstance(sub.images, FolderImages) and len(sub) == 4
    batches = list(sub.batches(3))
    assert [tuple(b.shape) for b in batches] == [(3, 3, 224, 224), (1, 3, 224, 224)]
    assert len(calls) == 4 and all(0.0 <= float(b.min()) and float(b.max()) <= 1.0 for b in batches)
    assert sorted(calls) == sorted(ds.images.files[i] for i in sub.indices)  # decoded by a thread pool
    assert ds.images[int(sub.indices[1])].shape == (224, 224, 3)
    np.testing.assert_array_equal(np.asarray(sub.images)[1], ds.images[int(sub.indices[1])])


def test_pixels_match_torchvision_transform(data_dir):
    tf = torchvision.transforms.Compose([torchvision.transforms.Resize(256), torchvision.transforms.CenterCrop(224)])
    ds = load_imagenet_val("imagenet", str(data_dir), threads=2)
    decoded = ds.images[0:6]
    assert isinstance(decoded, np.ndarray) and decoded.shape == (6, 224, 224, 3)
    for k, path in enumerate(ds.images.files):
        with Image.open(path) as img:
            expected = np.asarray(tf(img.convert("RGB")))
        np.testing.assert_array_equal(decoded[k], expected, err_msg=str(path))
    serial = FolderImages(ds.images.files, threads=1)
    np.testing.assert_array_equal(serial[np.array([5, 0])][0:2], decoded[[5, 0]])


def test_content_id_follows_the_files(tmp_path):
    root = _tree(tmp_path, WNIDS[:2], per_class=1, ood=2)
    before = load_imagenet_val("imagenet", str(root))
    ood_before = load_ood_folder("inaturalist", "iNaturalist/images", str(root))
    assert load_imagenet_val("imagenet", str(root)).content_id == before.content_id  # deterministic
    assert load_imagenet_val("imagenet", str(root), size=112).content_id != before.content_id
    _jpeg(root / "imagenet" / "val" / WNIDS[1] / "extra.JPEG", (300, 260), 7)
    _jpeg(root / "iNaturalist" / "images" / "extra.jpg", (300, 260), 8)
    after = load_imagenet_val("imagenet", str(root))
    assert len(after) == len(before) + 1 and after.content_id != before.content_id
    ood_after = load_ood_folder("inaturalist", "iNaturalist/images", str(root))
    assert len(ood_after) == 3 and ood_after.content_id != ood_before.content_id


def test_ood_folder(data_dir):
    ood = load_ood_folder("inaturalist", "iNaturalist/images", str(data_dir), n_expected=10000)
    assert ood.labels is None and ood.images.shape == (2, 224, 224, 3)
    assert [p.name for p in ood.images.files] == ["0000.jpg", "0001.jpg"]
    assert any("published set has 10000" in n for n in ood.notes)
    assert next(ood.batches(8)).shape == (2, 3, 224, 224)


def test_missing_data_is_one_line(tmp_path):
    with pytest.raises(DataNotAvailable) as err:
        load_imagenet_val("imagenet", str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "not available" in msg and str(tmp_path / "imagenet" / "val") in msg
    assert "image-net.org" in msg
    url = "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/SUN.tar.gz"
    with pytest.raises(DataNotAvailable) as err:
        load_ood_folder("sun", "SUN/images", str(tmp_path), url=url)
    msg = str(err.value)
    assert "\n" not in msg and f"put its images under {tmp_path / 'SUN' / 'images'} (from {url})" in msg


# --- models ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,tv_fn,dim,maps", [
    (TorchvisionResNet50, torchvision.models.resnet50, 2048, ("layer1", "layer2", "layer3", "layer4")),
    (TorchvisionMobileNetV2, torchvision.models.mobilenet_v2, 1280, ("stage1", "stage2", "stage3", "stage4", "stage5")),
])
def test_wrappers_compute_torchvision_forward(cls, tv_fn, dim, maps):
    torch.manual_seed(0)
    tv = tv_fn(weights=None).eval()
    net = cls(1000)
    net.load_state_dict(tv.state_dict())  # torchvision's key names, unchanged
    net.eval()
    assert (net.feature_dim, net.num_classes, net.feature_map_names) == (dim, 1000, maps)
    x = torch.randn(2 if cls is TorchvisionMobileNetV2 else 1, 3, 224, 224)
    with torch.no_grad():
        feats = net.features(x)
        assert feats.shape == (len(x), dim)
        reference = tv(x)
        torch.testing.assert_close(net.head(feats), reference, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(net(x), reference, rtol=1e-4, atol=1e-4)
        small = torch.randn(1, 3, 64, 64)  # feature maps: cheap check at 64 px (last map 2x2)
        fm = net.feature_maps(small)
        last = net.feature_maps(small, [maps[-1]])[maps[-1]]
    assert list(fm) == list(maps) and last.shape == (1, dim, 2, 2)
    torch.testing.assert_close(last.mean((2, 3)), net.features(small), rtol=1e-4, atol=1e-5)
    assert isinstance(net.fc, torch.nn.Linear) and net.fc.in_features == dim


def test_registry_entries():
    assert {"resnet50", "mobilenet_v2"} <= set(ARCHS)
    assert NORMALIZATIONS["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for name, file, arch in (("tv_resnet50_imagenet", "resnet50-0676ba61.pth", "resnet50"),
                             ("tv_mobilenet_v2_imagenet", "mobilenet_v2-b0353104.pth", "mobilenet_v2")):
        spec = CHECKPOINTS[name]
        assert (spec.filename, spec.arch, spec.num_classes, spec.id_dataset) == (file, arch, 1000, "imagenet")
        assert spec.url == f"https://download.pytorch.org/models/{file}"
        assert hub_hash_prefix(spec.filename) == file.rsplit("-", 1)[1][:8]


def test_load_classifier_through_a_path(resnet_file):
    model, prov = load_classifier(None, resnet_file.parent, path=resnet_file, arch="resnet50",
                                  normalization="imagenet")
    assert prov["num_classes"] == 1000 and prov["arch"] == "resnet50" and prov["mean"] == (0.485, 0.456, 0.406)
    assert model.feature_dim == 2048 and not model.training
    state = torch.load(resnet_file, weights_only=True)
    torch.testing.assert_close(model.net.fc.weight, state["fc.weight"])
    torch.testing.assert_close(model.net.layer4[2].bn3.running_var, state["layer4.2.bn3.running_var"])


def test_hub_cache_lookup_and_prefix_check(resnet_file, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    weights = tmp_path / "weights"
    weights.mkdir()
    spec = CHECKPOINTS["tv_resnet50_imagenet"]

    with pytest.raises(CheckpointError) as err:  # nowhere: names the URL and both places
        locate_weights(spec, weights)
    msg = str(err.value)
    assert spec.url in msg and str(weights / spec.filename) in msg and str(hub / "checkpoints" / spec.filename) in msg
    assert "\n" not in msg

    (weights / spec.filename).write_bytes(b"not the published file")  # its sha256 does not start with 0676ba61
    with pytest.raises(CheckpointError, match="0676ba61"):
        locate_weights(spec, weights)
    with pytest.raises(CheckpointError, match="0676ba61"):
        load_torchvision_classifier(spec, weights)

    # a file whose name carries its true prefix is accepted, from torch hub's cache when not in the weights dir
    prefix = sha256_of(resnet_file)[:8]
    assert check_hub_prefix(resnet_file, f"resnet50-{prefix}.pth").startswith(prefix)
    mine = dataclasses.replace(spec, filename=f"resnet50-{prefix}.pth")
    (hub / "checkpoints").mkdir(parents=True)
    os.symlink(resnet_file, hub / "checkpoints" / mine.filename)
    assert locate_weights(mine, weights) == hub / "checkpoints" / mine.filename
    model, prov = load_torchvision_classifier(mine, weights)
    assert prov["sha256"].startswith(prefix) and prov["num_classes"] == 1000 and prov["std"] == (0.229, 0.224, 0.225)


# --- end to end ------------------------------------------------------------------------------------------


def test_run_py_end_to_end(tmp_path, resnet_file):
    data = _tree(tmp_path / "data", WNIDS[:2], per_class=1, ood=2)
    env = dict(os.environ, OODBENCH_CACHE=str(tmp_path / "cache"), OODBENCH_RESULTS=str(tmp_path / "results"),
               OODBENCH_WEIGHTS=str(resnet_file.parent), HYDRA_FULL_ERROR="0")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run.py"), "id=imagenet", "arch=resnet50", f"arch.checkpoint={resnet_file}",
         "ood=[inaturalist]", f"paths.data={data}", "detector=energy", "protocol.max_ood=null",
         "protocol.bootstrap=20", "batch_size=4", f"hydra.run.dir={out}"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_csv(out / "metrics.csv")
    assert len(df) == 1 and df.status[0] == "ok" and df.ood_dataset[0] == "inaturalist"
    assert (df.n_id[0], df.n_ood[0], df.arch[0]) == (2, 2, "resnet50")
    assert 0.0 <= df.auroc[0] <= 1.0
