"""Training data: the labelled ID training set, the outlier pool, and seeded augmented batches.

* ID: ``load_cifar(split='train')`` -- torchvision's official 50,000 images when present, else the exact subset
  (CIFAR-10: 5,085 images; CIFAR-100: 486); or (``train_set=jpeg``) :func:`load_jpeg_cifar`, the q~75 JPEG
  re-encode of all 50,000 CIFAR-10 training images (a lossy substitute, labelled by class folder).
* Outliers: Tiny-ImageNet-200 *train* images of the 174 classes that are not CIFAR-10 classes, 64x64 JPEGs
  decoded and resized to 32x32 once, cached as uint8 ``.npy`` (the papers' 80M Tiny Images / 300K Random
  Images are withdrawn or unavailable).
* Batches: :class:`EpochBatches` is a map-style dataset whose item ``i`` is the ``i``-th batch of the current
  epoch. Order and augmentation (zero-padded random 32x32 crop with padding 4, horizontal flip, as OE / Energy)
  depend only on ``(seed, epoch, i)``: a run and its resumption, with any number of workers, see the same
  batches. :class:`DeviceBatches` yields the same batches from uint8 copies of the images kept on the training
  device (crop and flip done there by indexing), so a GPU run does not wait on the host's cores.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from oodbench.data.archives import prepare
from oodbench.data.base import ImageSet
from oodbench.data.cifar import load_cifar
from oodbench.data.files import require_file
from oodbench.errors import OodbenchError

log = logging.getLogger("oodbench")

OFFICIAL_TRAIN = 50000
# What the outlier pool shares with each ID set (the pool drops Tiny-ImageNet's CIFAR-10 classes only).
OVERLAP_NOTES = {
    "cifar100": "the Tiny-ImageNet outlier pool overlaps CIFAR-100 classes semantically (e.g. fish, insects, "
                "trees, furniture, vehicles): outlier losses will push some genuine CIFAR-100 concepts "
                "towards 'OOD'; results are not comparable to the papers' 80M-Tiny-Images / 300K outliers",
}


def load_id_train(name: str, data_dir: Path, subset: str, root: str | None = None) -> ImageSet:
    """Labelled ID training images (official torchvision files if present, else the exact subset)."""
    data = load_cifar(name, str(data_dir), split="train", root=root, subset=subset)
    if data.labels is None or len(data) == 0:
        raise OodbenchError(f"ID training set {name} has no labelled images; check {data_dir / subset}")
    if len(data) < OFFICIAL_TRAIN:
        log.warning("training on %d of the %d official %s training images (%s); put torchvision's files under "
                    "%s for the full set", len(data), OFFICIAL_TRAIN, name, data.source,
                    Path(root) if root else data_dir / name)
    return data


def load_outliers(archive: str, data_dir: Path, cache_dir: Path, sha256: str | None, member_glob: str,
                  size: int, id_name: str) -> ImageSet:
    """The outlier pool, decoded and resized to ``size`` once and cached; warns on known class overlap."""
    path = require_file(Path(data_dir) / archive, "outlier pool",
                        "tin-outliers.tar.gz: 34,800 Tiny-ImageNet train JPEGs, see shared/data/README.md")
    images, digest = prepare(path, sha256, member_glob, Path(cache_dir), size)
    if id_name in OVERLAP_NOTES:
        log.warning(OVERLAP_NOTES[id_name])
    log.warning("outliers are Tiny-ImageNet train images: OOD results on tin_resize / tin_crop (Tiny-ImageNet "
                "test images) are optimistic for models trained with them")
    return ImageSet(name="tin-outliers", images=images, labels=None, source=f"archive {archive}",
                    n_total=len(images), indices=np.arange(len(images)),
                    content_id=f"archive:{digest}:{member_glob}:{size}")


def load_jpeg_cifar(name: str, data_dir: Path, cache_dir: Path, archive: str, sha256: str | None, split: str,
                    classes: list[str], n_official: int) -> ImageSet:
    """The JPEG re-encode of a CIFAR split (``<split>/<class>/NNNN.jpg``, numbered in order of appearance per
    class), decoded once by Pillow and cached; labels are the class folders' positions in ``classes``."""
    path = require_file(Path(data_dir) / archive, f"{name} {split} (JPEG re-encode)",
                        f"{Path(archive).name}: all {n_official} {name} {split} images as q~75 JPEGs, see "
                        "shared/data/README.md")
    glob = f"{split}/*/*.jpg"
    images, digest = prepare(path, sha256, glob, Path(cache_dir), size=None)
    with tarfile.open(path, "r:*") as tar:  # the names, in the order prepare() sorted the images
        members = sorted(m.name for m in tar if m.isfile() and fnmatch.fnmatch(m.name, glob))
    folders = [m.split("/")[-2] for m in members]
    unknown = sorted(set(folders) - set(classes))
    if unknown or len(members) != len(images):
        raise OodbenchError(f"{path}: class folders {unknown[:3]} are not {name} classes, or {len(members)} names for "
                            f"{len(images)} images; is it the right archive?")
    labels = np.array([classes.index(f) for f in folders], dtype=np.int64)
    return ImageSet(name=name, images=images, labels=labels,
                    source=f"JPEG re-encode (q~75, lossy) of the official {split} set, {Path(archive).name}",
                    n_total=n_official, indices=np.arange(len(images)), content_id=f"archive:{digest}:{glob}")


def limit(data: ImageSet, n: int | None, seed: int, what: str) -> ImageSet:
    """A seeded random subset of ``n`` images (in the set's order), for smoke runs; None keeps all."""
    if n is None or n >= len(data):
        return data
    if n < 2:
        raise OodbenchError(f"{what} limit must be >= 2, got {n}")
    keep = np.sort(np.random.default_rng([seed, 7]).choice(len(data), int(n), replace=False))
    return data.select(keep, note=f"seeded random subset of {n} of {len(data)} images (seed {seed})")


def draw_augment(rng: np.random.Generator, n: int, padding: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The random crop offsets (rows, columns into the padded image) and flips of ``n`` images, in draw order."""
    ys = rng.integers(0, 2 * padding + 1, n)
    xs = rng.integers(0, 2 * padding + 1, n)
    flips = rng.random(n) < 0.5
    return ys, xs, flips


def augment(images: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """Random ``H x W`` crop of the zero-padded image and a random horizontal flip, per image (NHWC uint8)."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ys, xs, flips = draw_augment(rng, n, padding)
    out = np.empty_like(images)
    for k in range(n):
        crop = padded[k, ys[k]:ys[k] + h, xs[k]:xs[k] + w]
        out[k] = crop[:, ::-1] if flips[k] else crop
    return out


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


class EpochBatches(Dataset):
    """Item ``i`` = batch ``i`` of the current epoch: ``(x_in uint8 NCHW, y_in int64, x_out uint8 NCHW | None)``.

    An epoch is one pass over the ID images (a final batch of one image is dropped: BatchNorm needs two);
    outliers are drawn without replacement from seeded permutations of the pool, cycling when an epoch needs
    more outliers than the pool holds. Use with ``DataLoader(batch_size=None)``; call :meth:`set_epoch`
    before iterating.
    """

    def __init__(self, id_set: ImageSet, outliers: ImageSet | None, batch_size: int, outlier_batch_size: int,
                 seed: int, augment: bool = True) -> None:
        if batch_size < 2 or (outliers is not None and outlier_batch_size < 1):
            raise OodbenchError(f"batch_size must be >= 2 and outlier_batch_size >= 1, got {batch_size} / "
                                f"{outlier_batch_size}")
        if id_set.images.dtype != np.uint8 or (outliers is not None and outliers.images.dtype != np.uint8):
            raise OodbenchError("training images must be uint8")
        self.x_in, self.y_in = id_set.images, np.asarray(id_set.labels, dtype=np.int64)
        self.x_out = None if outliers is None else outliers.images
        self.batch_size, self.outlier_batch_size = int(batch_size), int(outlier_batch_size)
        self.seed, self.augment = int(seed), bool(augment)
        n = len(self.x_in)
        self.steps = n // self.batch_size + (1 if n % self.batch_size > 1 else 0)
        if self.steps == 0:
            raise OodbenchError(f"ID training set has {n} image(s); need at least 2")
        self.set_epoch(1)

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, *key])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.order_in = self._rng(0).permutation(len(self.x_in))
        self.order_out = None
        if self.x_out is not None:
            need = self.steps * self.outlier_batch_size
            rounds = math.ceil(need / len(self.x_out))
            self.order_out = np.concatenate([self._rng(1, r).permutation(len(self.x_out)) for r in range(rounds)])

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if not 0 <= i < self.steps:
            raise IndexError(i)
        rng = self._rng(2, i)
        idx = self.order_in[i * self.batch_size:(i + 1) * self.batch_size]
        x_in = self.x_in[idx]
        x_out = None
        if self.order_out is not None:
            x_out = self.x_out[self.order_out[i * self.outlier_batch_size:(i + 1) * self.outlier_batch_size]]
        if self.augment:
            x_in = augment(x_in, rng)
            x_out = None if x_out is None else augment(x_out, rng)
        return _nchw(x_in), torch.from_numpy(self.y_in[idx]), None if x_out is None else _nchw(x_out)

    def describe(self) -> str:
        out = "" if self.x_out is None else f" + {self.outlier_batch_size} outliers"
        return f"{self.steps} steps/epoch of {self.batch_size} ID images{out}"


def device_augment(images: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, flips: torch.Tensor,
                   padding: int = 4) -> torch.Tensor:
    """:func:`augment` on an NCHW uint8 tensor on any device, given the draws of :func:`draw_augment`: zero-pad,
    gather each image's crop by index (flipped columns reversed). Bit-identical to :func:`augment`."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = ys[:, None] + torch.arange(h, device=images.device)
    cols = xs[:, None] + torch.arange(w, device=images.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    out = padded[torch.arange(n, device=images.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()  # advanced indices first: (n, h, w, c) -> NCHW


class DeviceBatches:
    """The batches of an :class:`EpochBatches` (same order, same crops and flips), assembled on ``device`` from
    uint8 NCHW copies of the images held there (CIFAR-10 train: 150 MB; the outlier pool: 107 MB). Iterate after
    :meth:`set_epoch`; items are ``(x_in uint8, y_in int64, x_out uint8 | None)`` on the device.

    :meth:`set_epoch` draws the whole epoch's indices and augmentation on the host (the same per-batch generators as
    :class:`EpochBatches`) and copies them to the device once, so no step waits on a host-to-device copy.
    """

    def __init__(self, batches: EpochBatches, device: torch.device) -> None:
        self.batches, self.device = batches, torch.device(device)
        self.x_in = _nchw(batches.x_in).to(self.device)
        self.y_in = torch.from_numpy(batches.y_in).to(self.device)
        self.x_out = None if batches.x_out is None else _nchw(batches.x_out).to(self.device)
        self._plan: dict[str, torch.Tensor] = {}

    def set_epoch(self, epoch: int) -> None:
        b = self.batches
        b.set_epoch(epoch)
        plan: dict[str, list[np.ndarray]] = {}
        for i in range(b.steps):
            rng = b._rng(2, i)
            parts = [("in", b.order_in[i * b.batch_size:(i + 1) * b.batch_size])]
            if b.order_out is not None:
                parts.append(("out", b.order_out[i * b.outlier_batch_size:(i + 1) * b.outlier_batch_size]))
            for key, idx in parts:  # the draw order of EpochBatches.__getitem__: ID, then outliers
                draws = draw_augment(rng, len(idx)) if b.augment else (np.zeros(0),) * 3
                for name, arr in zip(("idx", "ys", "xs", "flips"), (idx, *draws)):
                    plan.setdefault(f"{key}_{name}", []).append(arr)
        self._plan = {k: torch.from_numpy(np.concatenate(v)).to(self.device) for k, v in plan.items()}

    def __len__(self) -> int:
        return len(self.batches)

    def _take(self, images: torch.Tensor, key: str, lo: int, hi: int) -> torch.Tensor:
        p = self._plan
        picked = images[p[f"{key}_idx"][lo:hi]]
        if not self.batches.augment:
            return picked
        return device_augment(picked, p[f"{key}_ys"][lo:hi], p[f"{key}_xs"][lo:hi], p[f"{key}_flips"][lo:hi])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        b = self.batches
        n_in, n_out = len(self._plan["in_idx"]), len(self._plan.get("out_idx", ()))
        for i in range(b.steps):
            lo, hi = i * b.batch_size, min((i + 1) * b.batch_size, n_in)
            x_in = self._take(self.x_in, "in", lo, hi)
            y_in = self.y_in[self._plan["in_idx"][lo:hi]]
            x_out = None
            if self.x_out is not None and n_out:
                olo, ohi = i * b.outlier_batch_size, (i + 1) * b.outlier_batch_size
                x_out = self._take(self.x_out, "out", olo, ohi)
            yield x_in, y_in, x_out

    def describe(self) -> str:
        return f"{self.batches.describe()}, assembled on {self.device}"
