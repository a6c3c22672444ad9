"""ImageNet-1k as ID set and the large-scale OOD sets of MOS (Huang & Li, CVPR 2021), decoded lazily.

* ImageNet val (50,000 images) as class folders ``<data>/imagenet/val/<wnid>/*.JPEG`` -- the layout of
  ``torchvision.datasets.ImageFolder``: label = index of the wnid among the sorted class folders, images in
  sorted path order within a class. The train split (``imagenet/train/<wnid>/``) is read the same way when a
  detector fits on ID training features.
* OOD: iNaturalist, SUN, Places (``iNaturalist/images``, ``SUN/images``, ``Places/images``: 10,000 images each,
  as MOS distributes them) and Textures (DTD, ``dtd/images/<category>/``, 5,640 images).

Every image goes through torchvision's evaluation transform (Resize(256) + CenterCrop(224)) when its batch is
needed (:class:`~oodbench.data.lazy.FolderImages`); nothing is decoded when a set is loaded. None of these sets
is available in the development environment: a missing one gives one line saying where to put it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from oodbench.data.base import ImageSet
from oodbench.data.lazy import IMAGE_EXTENSIONS, FolderImages
from oodbench.errors import DataNotAvailable

log = logging.getLogger("oodbench")

IMAGENET_URL = "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php"
IMAGENET_CLASSES = 1000
IMAGENET_VAL_N = 50000


def list_images(root: Path) -> list[Path]:
    """Every image file below ``root`` (torchvision's extensions, any case), sorted by relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        found += [Path(dirpath) / f for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def listing_digest(root: Path, files: list[Path], *extra: object) -> str:
    """sha256 of the sorted relative paths and byte sizes (plus ``extra``, e.g. the transform): changes when a
    file is added, removed, renamed or replaced by one of another size, so the representation cache follows."""
    h = hashlib.sha256(repr(extra).encode())
    for p in files:
        h.update(f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def _transform(size: int, resize: int | None) -> tuple[int, int]:
    return size, int(resize) if resize is not None else int(round(size / 0.875))


def load_imagenet_val(
    name: str, data_dir: str, folder: str = "imagenet/val", cache_dir: str = "", size: int = 224,
    resize: int | None = None, split: str = "val", train_folder: str = "imagenet/train", url: str = IMAGENET_URL,
    threads: int | None = None,
) -> ImageSet:
    """ImageNet-1k ``split`` (val, alias test; or train) from class folders, labels = sorted-wnid index.

    ``cache_dir`` is accepted for the loader interface and unused: nothing is decoded up front (the
    representation cache keeps the forward pass). ``resize`` defaults to ``size / 0.875`` (256 for 224).
    """
    del cache_dir
    if split not in ("val", "test", "train"):
        raise ValueError(f"ImageNet split must be val (or test) or train, got {split!r}")
    root = Path(data_dir) / (train_folder if split == "train" else folder)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir()) if root.is_dir() else []
    per_class = [list_images(root / c) for c in classes]
    files = [p for group in per_class for p in group]
    if not files:
        raise DataNotAvailable(f"ImageNet {split} not available: put the ILSVRC2012 {split} images as class "
                               f"folders <wnid>/*.JPEG under {root} (from {url})")
    labels = np.concatenate([np.full(len(g), k, dtype=np.int64) for k, g in enumerate(per_class)])
    size, resize = _transform(size, resize)
    digest = listing_digest(root, files, "classes", resize, size)
    notes: tuple[str, ...] = ()
    if len(classes) != IMAGENET_CLASSES:
        msg = (f"{len(classes)} class folders under {root}, ImageNet-1k has {IMAGENET_CLASSES}: labels are indices "
               "into the folders present, so ID accuracy is not meaningful")
        log.warning(msg)
        notes = (msg,)
    elif split != "train" and len(files) != IMAGENET_VAL_N:
        notes = (f"{len(files)} images, the official val set has {IMAGENET_VAL_N}",)
    return ImageSet(
        name=name, images=FolderImages(files, size, resize, threads), labels=labels,
        source=f"class folders {root} (resize {resize} + center-crop {size})", n_total=len(files),
        indices=np.arange(len(files)), content_id=f"imagefolder:{name}:{split}:{digest}", notes=notes,
    )


def load_ood_folder(
    name: str, folder: str, data_dir: str, cache_dir: str = "", url: str = "", size: int = 224,
    resize: int | None = None, n_expected: int | None = None, threads: int | None = None,
) -> ImageSet:
    """Every image below ``data_dir/folder`` (sorted relative paths), lazily resized + center-cropped.

    ``n_expected`` (the published size of the set) only adds a note when the folder holds another count.
    """
    del cache_dir
    root = Path(data_dir) / folder
    files = list_images(root) if root.is_dir() else []
    if not files:
        raise DataNotAvailable(f"OOD set {name} not available: put its images under {root} (from {url})")
    size, resize = _transform(size, resize)
    digest = listing_digest(root, files, resize, size)
    notes: tuple[str, ...] = ()
    if n_expected is not None and len(files) != n_expected:
        notes = (f"{len(files)} images found, the published set has {n_expected}",)
        log.warning("OOD set %s: %s under %s", name, notes[0], root)
    return ImageSet(
        name=name, images=FolderImages(files, size, resize, threads), labels=None,
        source=f"image folder {root} (resize {resize} + center-crop {size})", n_total=len(files),
        indices=np.arange(len(files)), content_id=f"folder:{name}:{digest}", notes=notes,
    )
