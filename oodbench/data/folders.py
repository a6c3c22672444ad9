"""OOD sets that users bring as image folders or torchvision files (SVHN, Places365, Textures, …).

None of these is available in the development environment; the loaders are real, and a missing set gives one
line saying where to put it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from oodbench.data.base import ImageSet
from oodbench.data.files import cached_array
from oodbench.errors import DataNotAvailable

_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _resize_center_crop(img: Image.Image, size: int) -> np.ndarray:
    """torchvision's ``Resize(size)`` (shorter side) then ``CenterCrop(size)``."""
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_image_folder(
    name: str, folder: str, data_dir: str, cache_dir: str, size: int = 32, url: str = "", max_files: int | None = None
) -> ImageSet:
    """Every image below ``data_dir/folder`` (sorted paths), resized (shorter side) and center-cropped."""
    root = Path(data_dir) / folder
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_EXT) if root.is_dir() else []
    if not files:
        raise DataNotAvailable(f"OOD set {name} not available: put its images under {root} (from {url})")
    files = files[:max_files] if max_files else files
    listing = hashlib.sha256("\n".join(str(p.relative_to(root)) for p in files).encode()).hexdigest()[:16]
    target = Path(cache_dir) / "prepared" / f"folder-{name}-{listing}-{size}.npy"
    images = cached_array(
        target, lambda: np.stack([_resize_center_crop(Image.open(p).convert("RGB"), size) for p in files])
    )
    return ImageSet(
        name=name, images=images, labels=None, source=f"image folder {root} (resize+center-crop {size})",
        n_total=len(images), indices=np.arange(len(images)), content_id=f"folder:{name}:{listing}:{size}",
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
