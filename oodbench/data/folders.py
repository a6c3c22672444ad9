"""OOD sets that users bring as image folders or torchvision files (SVHN, Places365, Textures, …).

None of these is available in the development environment; the loaders are real, and a missing set gives one
line saying where to put it.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from oodbench.data.base import ImageSet
from oodbench.data.files import atomic_savez, atomic_write_bytes
from oodbench.data.lazy import BAD_IMAGE, list_images, listing_digest, resize_center_crop
from oodbench.errors import DataNotAvailable, OodbenchError

log = logging.getLogger("oodbench")
BAD_IMAGE_POLICIES = ("fail", "skip")
SHOWN_BAD = 3


def _decode(path: Path, resize: int, size: int) -> np.ndarray | str:
    """The pixels of one file (torchvision-exact Resize + CenterCrop), or why it cannot be decoded."""
    try:
        with Image.open(path) as img:
            return resize_center_crop(img, resize, size)
    except BAD_IMAGE as err:  # truncated, foreign, or a decompression bomb
        return f"{type(err).__name__}: {err}"


def report_bad(name: str, root: Path, bad: list[tuple[Path, str]], cache_dir: str, policy: str) -> str:
    """Write the full list of unreadable files to ``<cache>/bad-images/`` and return the one-line summary."""
    listing = Path(cache_dir) / "bad-images" / f"{name}-{listing_digest(root, [p for p, _ in bad])}.txt"
    text = "".join(f"{p}\t{why}\n" for p, why in bad)
    atomic_write_bytes(listing, lambda tmp: tmp.write_text(text))
    shown = ", ".join(str(p.relative_to(root)) for p, _ in bad[:SHOWN_BAD]) + (", ..." if len(bad) > SHOWN_BAD else "")
    what = f"{len(bad)} unreadable image file(s) in OOD set {name} under {root}: {shown} (full list: {listing})"
    if policy == "fail":
        return f"{what}; remove or replace them, or set ood.{name}.on_bad_image=skip"
    return f"{what}; skipped (ood.{name}.on_bad_image=skip)"


def _decode_all(files: list[Path], resize: int, size: int, target: Path) -> tuple[np.ndarray, list[str]]:
    """``(pixels of the readable files, error per file or "")``, cached at ``target`` (npz, atomic)."""
    if target.is_file():
        try:
            with np.load(target, allow_pickle=False) as z:
                return z["images"], [str(e) for e in z["errors"]]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            target.unlink(missing_ok=True)  # truncated or foreign: rebuild, never use
    decoded = [_decode(p, resize, size) for p in files]
    errors = [d if isinstance(d, str) else "" for d in decoded]
    good = [d for d in decoded if not isinstance(d, str)]
    images = np.stack(good) if good else np.zeros((0, size, size, 3), np.uint8)
    atomic_savez(target, images=images, errors=np.array(errors, dtype=str))
    return images, errors


def load_image_folder(
    name: str, data_dir: str, cache_dir: str, folder: str = "", path: str | None = None, size: int = 32,
    resize: int | None = None, url: str = "", max_files: int | None = None, on_bad_image: str = "fail",
) -> ImageSet:
    """Every image below ``path`` (absolute, or relative to ``data_dir``; else ``data_dir/folder``), in sorted
    relative-path order, through torchvision's ``Resize(resize)`` (shorter side; default ``resize = size``) +
    ``CenterCrop(size)`` — pixel-exact (:func:`~oodbench.data.lazy.resize_center_crop`) — decoded once into the
    cache. Files with torchvision's image extensions count (:data:`~oodbench.data.lazy.IMAGE_EXTENSIONS`).

    Unreadable files are all listed (count, the first few names, the full list written to the cache) and then
    either fail the set (``on_bad_image=fail``, the default) or are left out (``skip``, recorded in the notes).
    The content id hashes the files' relative paths and byte sizes and the transform; ``indices`` are positions
    in the sorted listing, so skipped files leave gaps.
    """
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise OodbenchError(f"ood.{name}.on_bad_image={on_bad_image!r}: choose from {', '.join(BAD_IMAGE_POLICIES)}")
    root = Path(path).expanduser() if path else Path(folder)
    root = root if root.is_absolute() else Path(data_dir) / root
    resize = int(resize) if resize is not None else int(size)
    files = list_images(root) if root.is_dir() else []
    if not files:
        where = f"put its images under {root}" + (f" (from {url})" if url else "")
        raise DataNotAvailable(f"OOD set {name} not available: {where}")
    files = files[:max_files] if max_files else files
    listing = listing_digest(root, files, resize, size)
    images, errors = _decode_all(files, resize, size, Path(cache_dir) / "prepared" / f"folder-{name}-{listing}.npz")
    bad = [(p, e) for p, e in zip(files, errors) if e]
    notes: tuple[str, ...] = ()
    if bad:
        line = report_bad(name, root, bad, cache_dir, on_bad_image)
        if on_bad_image == "fail" or len(bad) == len(files):
            raise OodbenchError(line)
        log.warning("%s", line)
        notes = (f"{len(bad)} unreadable file(s) skipped",)
    return ImageSet(
        name=name, images=images, labels=None, n_total=len(files), notes=notes,
        source=f"image folder {root} ({len(files)} files, listing sha256 {listing}; resize {resize} + "
               f"center-crop {size})",
        indices=np.flatnonzero([not e for e in errors]), content_id=f"folder:{name}:{listing}",
    )


def load_svhn(
    name: str, data_dir: str, folder: str = "svhn", download: bool = False, url: str = "", cache_dir: str = ""
) -> ImageSet:
    """SVHN test split (26,032 images) from torchvision's ``test_32x32.mat`` (needs scipy)."""
    import torchvision.datasets as tvd

    root = Path(data_dir) / folder
    try:
        ds = tvd.SVHN(root=str(root), split="test", download=download)
    except RuntimeError:
        raise DataNotAvailable(f"OOD set {name} not available: put test_32x32.mat at {root} (from {url})") from None
    except ImportError:
        raise DataNotAvailable(f"OOD set {name} needs scipy to read {root}/test_32x32.mat: pip install scipy") from None
    images = np.ascontiguousarray(np.transpose(ds.data, (0, 2, 3, 1)))
    return ImageSet(
        name=name, images=images, labels=None, source=f"official SVHN test, torchvision files at {root}",
        n_total=len(images), indices=np.arange(len(images)), content_id="torchvision:svhn:test",
    )
