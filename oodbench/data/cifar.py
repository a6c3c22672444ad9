"""CIFAR-10/100: the official torchvision files when present, else the exact subsets shipped in ``shared/data``.

The result always says which (``cifar10 test 1017/10000 (exact subset: first 1017 official test images)``);
a run never silently evaluates on fewer images than the user thinks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oodbench.data.base import ImageSet
from oodbench.data.files import sha256_file
from oodbench.errors import DataNotAvailable

_TORCHVISION = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}
_TORCHVISION_DIR = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}  # what torchvision unpacks
_OFFICIAL_N = {"test": 10000, "train": 50000}


def _from_torchvision(name: str, root: Path, train: bool, download: bool) -> ImageSet | None:
    if not download and not (root / _TORCHVISION_DIR[name]).is_dir():
        return None  # no files to read: do not pay for importing torchvision
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TORCHVISION[name])
    try:
        ds = cls(root=str(root), train=train, download=download)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted" (it verifies md5 itself)
        return None
    split = "train" if train else "test"
    return ImageSet(
        name=name,
        images=np.asarray(ds.data, dtype=np.uint8),
        labels=np.asarray(ds.targets, dtype=np.int64),
        source=f"official {split} set, torchvision files at {root}",
        n_total=len(ds.data),
        indices=np.arange(len(ds.data)),
        content_id=f"torchvision:{name}:{split}",  # torchvision checks the official md5s
    )


def _from_subset(name: str, npz: Path, split: str) -> ImageSet:
    digest = sha256_file(npz)
    with np.load(npz) as d:
        images, index = d[f"{split}_images"], d[f"{split}_index"].astype(np.int64)
        labels = d[f"{split}_labels_all"][index].astype(np.int64)
    return ImageSet(
        name=name,
        images=images,
        labels=labels,
        source=f"exact subset of the official {split} set, {npz.name}",
        n_total=_OFFICIAL_N[split],
        indices=index,
        content_id=f"npz:{digest}:{split}",
    )


def load_cifar(
    name: str,
    data_dir: str,
    split: str = "test",
    root: str | None = None,
    subset: str | None = None,
    download: bool = False,
    cache_dir: str = "",
) -> ImageSet:
    """CIFAR ``name`` (cifar10 / cifar100), ``split`` test or train.

    Looks first for torchvision's files under ``root`` (default ``<data_dir>/<name>``; downloaded there if
    ``download=true``), then for the exact subset ``<data_dir>/<subset>``. ``cache_dir`` is unused (the
    common loader signature).
    """
    tv_root = Path(root) if root else Path(data_dir) / name
    found = _from_torchvision(name, tv_root, split == "train", download)
    if found is not None:
        return found
    npz = Path(data_dir) / subset if subset else None
    if npz is not None and npz.is_file():
        return _from_subset(name, npz, split)
    raise DataNotAvailable(
        f"{name} {split} not available: put torchvision's files under {tv_root} (or run with "
        f"id.download=true), or the exact subset at {npz}"
    )
