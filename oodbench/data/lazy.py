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

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from oodbench.errors import DataNotAvailable

# what Pillow raises for a file that is not a decodable image: truncated or foreign data (OSError, SyntaxError,
# ValueError) or an image larger than Image.MAX_IMAGE_PIXELS twice over (a decompression bomb)
BAD_IMAGE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
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
    except BAD_IMAGE as err:  # truncated, foreign, or a decompression bomb
        raise DataNotAvailable(f"cannot decode image {path} ({err}); the file is corrupt or missing: "
                               "re-extract the data set") from None


class LazyImages:
    """Lazy ``(N, size, size, 3)`` uint8 array decoded item by item; see the module docstring for the indexing
    rules. Subclasses say how many items there are (:meth:`__len__`), how to decode item ``i``
    (:meth:`load`) and how to make a view over some items (:meth:`_view`)."""

    dtype = np.dtype(np.uint8)
    ndim = 4
    size: int
    resize: int
    threads: int

    def _setup(self, size: int, resize: int | None, threads: int | None) -> None:
        self.size = int(size)
        self.resize = int(resize) if resize is not None else int(round(self.size / 0.875))
        if self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be >= size ({self.size})")
        self.threads = default_threads() if threads is None else max(1, int(threads))

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, i: int) -> np.ndarray:
        """Item ``i`` (0 <= i < len) as uint8 ``(size, size, 3)``."""
        raise NotImplementedError

    def _view(self, positions: list[int]) -> LazyImages:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), self.size, self.size, 3)

    def decode(self, positions: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Decode the images at ``positions`` (all when None) → uint8 ``(k, size, size, 3)``."""
        pos = list(range(len(self))) if positions is None else [int(i) for i in positions]
        out = np.empty((len(pos), self.size, self.size, 3), dtype=np.uint8)

        def one(k: int) -> None:
            out[k] = self.load(pos[k])

        if self.threads == 1 or len(pos) < 2:
            for k in range(len(pos)):
                one(k)
        else:
            with ThreadPoolExecutor(max_workers=min(self.threads, len(pos))) as pool:
                list(pool.map(one, range(len(pos))))  # list() re-raises the first worker error
        return out

    def __getitem__(self, key: object) -> np.ndarray | LazyImages:
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} out of range for {len(self)} images")
            return self.load(i % len(self))
        if isinstance(key, slice):
            return self.decode(range(*key.indices(len(self))))
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean index of shape {idx.shape} for {len(self)} images")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise IndexError(f"{type(self).__name__} supports an int, a slice or a 1-d int/bool array, not {key!r}")
        if idx.size and (idx.max() >= len(self) or idx.min() < -len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        return self._view([int(i) % len(self) for i in idx])

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        arr = self.decode()
        return arr if dtype is None else arr.astype(dtype, copy=False)


class FolderImages(LazyImages):
    """Lazy view of image files (``files`` keep their given order; loaders pass them sorted). ``resize``
    defaults to ``size / 0.875`` (256 for 224, the standard ImageNet evaluation ratio). ``threads`` = decode
    threads per batch (1 = serial)."""

    def __init__(self, files: Sequence[str | os.PathLike], size: int = 224, resize: int | None = None,
                 threads: int | None = None) -> None:
        self.files: tuple[Path, ...] = tuple(Path(f) for f in files)
        self._setup(size, resize, threads)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"FolderImages({len(self)} files, resize {self.resize}, crop {self.size})"

    def load(self, i: int) -> np.ndarray:
        return decode_file(self.files[i], self.resize, self.size)

    def _view(self, positions: list[int]) -> FolderImages:
        return FolderImages([self.files[i] for i in positions], self.size, self.resize, self.threads)


class ResampledImages(LazyImages):
    """Lazy view of an in-memory uint8 ``(N, h, w, 3)`` array put through :func:`resize_center_crop` — e.g. a
    32-px OOD archive fed to a 224-px ImageNet network (``Resize(256)`` upsamples, then ``CenterCrop(224)``)."""

    def __init__(self, base: np.ndarray, size: int = 224, resize: int | None = None,
                 threads: int | None = None) -> None:
        if base.dtype != np.uint8 or base.ndim != 4:
            raise ValueError(f"ResampledImages needs uint8 (N, h, w, 3) pixels, got {base.dtype} {base.shape}")
        self.base = base
        self._setup(size, resize, threads)

    def __len__(self) -> int:
        return len(self.base)

    def __repr__(self) -> str:
        return f"ResampledImages({len(self)} of {self.base.shape[1:3]}, resize {self.resize}, crop {self.size})"

    def load(self, i: int) -> np.ndarray:
        return resize_center_crop(Image.fromarray(self.base[i]), self.resize, self.size)

    def _view(self, positions: list[int]) -> ResampledImages:
        return ResampledImages(self.base[positions], self.size, self.resize, self.threads)


def list_images(root: Path) -> list[Path]:
    """Every image file below ``root`` (torchvision's extensions, any case), sorted by relative path.

    Links: a link is what it points to — a linked folder is walked, a linked file counts — but every folder is
    walked once (by its real path: a link loop or two links to one folder cannot repeat it) and every file counts
    once (by its real path, at its first relative path in sorted order). A dangling link is listed, and then
    reported as unreadable like any file that does not decode."""
    found: list[tuple[str, Path]] = []
    walked: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        walked.add(os.path.realpath(dirpath))
        dirnames[:] = sorted(d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in walked)
        found += [(Path(dirpath, f).relative_to(root).as_posix(), Path(dirpath) / f) for f in filenames
                  if f.lower().endswith(IMAGE_EXTENSIONS)]
    out, real = [], set()
    for _, p in sorted(found):
        r = os.path.realpath(p)
        if r not in real:
            real.add(r)
            out.append(p)
    return out


def listing_digest(root: Path, files: list[Path], *extra: object) -> str:
    """sha256 of the sorted relative paths, byte sizes and modification times (plus ``extra``, e.g. the
    transform): changes when a file is added, removed, renamed or rewritten, so the representation cache and the
    result store follow."""
    h = hashlib.sha256(repr(extra).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
