"""Image folders too large to hold decoded in memory (ImageNet val: 50,000 × 224×224×3 = 7.5 GB as uint8).

:class:`FolderImages` is a read-only, array-like view of a list of image files that decodes on demand with
torchvision's evaluation transform (``Resize(256)`` on the shorter side, bilinear, then ``CenterCrop(224)``),
re-implemented with PIL so that pixels match ``torchvision.transforms`` exactly. It stands in for the
``images`` array of an :class:`~oodbench.data.base.ImageSet`:

* ``len(x)``, ``x.shape`` = ``(N, size, size, 3)``, ``x.dtype`` = uint8, ``x.ndim``;
* ``x[i]`` decodes one image → ndarray ``(size, size, 3)``; ``x[a:b]`` decodes a batch → ndarray
  ``(k, size, size, 3)`` (this is what ``ImageSet.batches`` asks for);
* ``x[int_array]`` / ``x[bool_mask]`` is *lazy*: another :class:`FolderImages` over those files (this is what
  ``ImageSet.select`` / ``protocol_subset`` ask for, on the whole set: decoding there would load everything);
* ``np.asarray(x)`` decodes every image of the view (only sensible for small views).

Batches are decoded by a small thread pool (PIL releases the GIL while decoding and resizing).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from oodbench.errors import DataNotAvailable

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


def default_threads() -> int:
    """Decode threads: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def resize_center_crop(img: Image.Image, resize: int, size: int) -> np.ndarray:
    """``transforms.Resize(resize)`` (shorter side → ``resize``, longer side truncated as torchvision does,
    PIL bilinear with antialiasing) then ``transforms.CenterCrop(size)``; returns uint8 (size, size, 3)."""
    if resize < size:
        raise ValueError(f"resize ({resize}) must be >= crop size ({size})")
    img = img.convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def decode_file(path: Path, resize: int, size: int) -> np.ndarray:
    """One file through :func:`resize_center_crop`; an unreadable file is a one-line error naming it."""
    try:
        with Image.open(path) as img:
            return resize_center_crop(img, resize, size)
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises these for truncated / foreign files
        raise DataNotAvailable(f"cannot decode image {path} ({err}); the file is corrupt or missing: "
                               "re-extract the data set") from None


class FolderImages:
    """Lazy ``(N, size, size, 3)`` uint8 array of image files; see the module docstring for the indexing rules.

    ``files`` keep their given order (loaders pass them sorted). ``resize`` defaults to ``size / 0.875``
    (256 for 224, the standard ImageNet evaluation ratio). ``threads`` = decode threads per batch (1 = serial).
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, files: Sequence[str | os.PathLike], size: int = 224, resize: int | None = None,
                 threads: int | None = None) -> None:
        self.files: tuple[Path, ...] = tuple(Path(f) for f in files)
        self.size = int(size)
        self.resize = int(resize) if resize is not None else int(round(self.size / 0.875))
        if self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be >= size ({self.size})")
        self.threads = default_threads() if threads is None else max(1, int(threads))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), self.size, self.size, 3)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"FolderImages({len(self)} files, resize {self.resize}, crop {self.size})"

    def _view(self, files: Sequence[Path]) -> FolderImages:
        return FolderImages(files, self.size, self.resize, self.threads)

    def decode(self, positions: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Decode the images at ``positions`` (all when None) → uint8 ``(k, size, size, 3)``."""
        files = self.files if positions is None else [self.files[int(i)] for i in positions]
        out = np.empty((len(files), self.size, self.size, 3), dtype=np.uint8)

        def one(k: int) -> None:
            out[k] = decode_file(files[k], self.resize, self.size)

        if self.threads == 1 or len(files) < 2:
            for k in range(len(files)):
                one(k)
        else:
            with ThreadPoolExecutor(max_workers=min(self.threads, len(files))) as pool:
                list(pool.map(one, range(len(files))))  # list() re-raises the first worker error
        return out

    def __getitem__(self, key: object) -> np.ndarray | FolderImages:
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} out of range for {len(self)} images")
            return decode_file(self.files[i], self.resize, self.size)
        if isinstance(key, slice):
            return self.decode(range(*key.indices(len(self))))
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean index of shape {idx.shape} for {len(self)} images")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise IndexError(f"FolderImages supports an int, a slice or a 1-d int/bool array, not {key!r}")
        if idx.size and (idx.max() >= len(self) or idx.min() < -len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        return self._view([self.files[int(i)] for i in idx])

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        arr = self.decode()
        return arr if dtype is None else arr.astype(dtype, copy=False)
