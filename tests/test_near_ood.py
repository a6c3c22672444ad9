"""The CIFAR near-OOD sets (``ood=cifar100`` / ``cifar10`` and the OpenOOD TinyImageNet stand-ins ``tin_near_c10`` /
``tin_near_c100``): counts, sources, the seeded sample, and OpenOOD's test preprocessing on the real files."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oodbench.conf import group_node
from oodbench.data.archives import listing
from oodbench.data.files import sha256_file
from oodbench.errors import OodbenchError
from oodbench.runner.build import build

# OpenOOD v1.5's TIN near-OOD counts (maintainer, Jingkang50/OpenOOD issue #259)
OPENOOD_TIN = {"tin_near_c10": 7793, "tin_near_c100": 6526}


def _load(name: str, data: Path, cache: Path, **kw: object):
    return build(group_node("ood", [name])[name], f"OOD set {name}", f"ood.{name}", data_dir=str(data),
                 cache_dir=str(cache), **kw)


def test_cifar_near_ood_sets_are_the_exact_test_subsets(shared_data, tmp_path):
    for name, n in (("cifar100", 916), ("cifar10", 1017)):
        s = _load(name, shared_data, tmp_path)
        assert s.name == name and len(s) == n and s.n_total == 10000
        assert s.describe() == f"{name} {n}/10000 (exact subset of the official test set, {name}-exact-subset.npz)"
        assert s.images.shape == (n, 32, 32, 3) and s.images.dtype == np.uint8
        assert (s.indices == np.arange(n)).all()
        with np.load(shared_data / name / f"{name}-exact-subset.npz") as z:
            assert (s.images == z["test_images"]).all()
        ident = build(group_node("id", name), "ID", "id", data_dir=str(shared_data), cache_dir=str(tmp_path))
        assert ident.content_id == s.content_id  # the same images the other ID set's networks are tested on


def test_tin_near_sets_are_seeded_samples_of_the_outlier_pool(shared_data, tmp_path):
    archive = shared_data / "tinyimagenet" / "tin-outliers.tar.gz"
    c10, c100 = (_load(n, shared_data, tmp_path) for n in OPENOOD_TIN)
    for s, name in ((c10, "tin_near_c10"), (c100, "tin_near_c100")):
        assert s.name == name and len(s) == OPENOOD_TIN[name] and s.n_total == 34800
        assert s.describe().startswith(f"{name} {OPENOOD_TIN[name]}/34800 (STAND-IN for OpenOOD v1.5 TIN near-OOD")
        assert s.notes == (f"seeded sample of {OPENOOD_TIN[name]} of the archive's 34800 images (seed 0)",)
        assert s.images.shape == (OPENOOD_TIN[name], 32, 32, 3) and not getattr(s.images, "made", True)
        assert len(np.unique(s.indices)) == len(s) and (np.diff(s.indices) > 0).all()
        assert s.labels is None
    assert "CIFAR-100 overlap NOT removed" in c100.source
    assert set(c100.indices) <= set(c10.indices)  # same seed: the smaller sample is a prefix of the same permutation
    expect = np.sort(np.random.default_rng(0).permutation(34800)[:7793])
    assert (c10.indices == expect).all()
    # the sample spans the pool's 174 classes (no CIFAR-10 class is in the pool)
    names, _, _ = listing(archive, sha256_file(archive), "tin-outliers/*/images/*.JPEG", tmp_path, 32)
    classes = {names[i].split("/")[1] for i in c10.indices}
    assert len({n.split("/")[1] for n in names}) == 174 and len(classes) == 174
    # another seed: another sample; a bad n: one clear error
    assert not (_load("tin_near_c10", shared_data, tmp_path, seed=1).indices == c10.indices).all()
    with pytest.raises(OodbenchError, match=r"ood.tin_near_c10.n=40000: .* between 1 and 34800"):
        _load("tin_near_c10", shared_data, tmp_path, n=40000)


def test_tin_near_pixels_are_openoods_resize_then_center_crop(shared_data, tmp_path):
    """OpenOOD's CIFAR test transform (openood/evaluation_api/preprocessor.py): Resize(32, bilinear), CenterCrop(32)."""
    tvt = pytest.importorskip("torchvision.transforms")
    archive = shared_data / "tinyimagenet" / "tin-outliers.tar.gz"
    s = _load("tin_near_c10", shared_data, tmp_path)
    names, _, _ = listing(archive, sha256_file(archive), "tin-outliers/*/images/*.JPEG", tmp_path, 32)
    pick = np.array([0, 1, 2500, len(s) - 1])
    got = np.asarray(s.select(pick).images)
    wanted = {names[s.indices[i]] for i in pick}
    raw = {}
    with tarfile.open(archive, "r:*") as tar:
        for m in tar:
            if m.name in wanted:
                raw[m.name] = tar.extractfile(m).read()
    transform = tvt.Compose([tvt.Resize(32, interpolation=tvt.InterpolationMode.BILINEAR), tvt.CenterCrop(32)])
    for j, i in enumerate(pick):
        img = Image.open(io.BytesIO(raw[names[s.indices[i]]])).convert("RGB")
        assert img.size == (64, 64)
        assert (np.asarray(transform(img)) == got[j]).all()
