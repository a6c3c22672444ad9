"""OOD test sets distributed as image archives (ODIN's iSUN, LSUN, TinyImageNet; Tiny-ImageNet test).

``prepare`` verifies the archive's sha256, decodes every image in ODIN's order (torchvision ``ImageFolder``
sorts file names as strings, so ``10.jpg`` precedes ``2.jpg``) and caches the uint8 array under the cache dir,
keyed by the archive digest. Later runs load the array in milliseconds.
"""

from __future__ import annotations

import fnmatch
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from oodbench.data.base import ImageSet
from oodbench.data.files import cached_array, require_file, verify_sha256
from oodbench.errors import OodbenchError

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")


def _decode_archive(archive: Path, member_glob: str, size: int | None) -> np.ndarray:
    """Decode in the archive's own order (one sequential pass: no gzip re-seeks), then sort by file name."""
    decoded: dict[str, np.ndarray] = {}
    with tarfile.open(archive, "r:*") as tar:
        for m in tar:
            if not (m.isfile() and m.name.lower().endswith(_IMAGE_EXT) and fnmatch.fnmatch(m.name, member_glob)):
                continue
            img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            decoded[m.name] = np.asarray(img, dtype=np.uint8)
    if not decoded:
        raise OodbenchError(f"{archive} holds no images matching {member_glob!r}; is it the right archive?")
    shapes = {a.shape for a in decoded.values()}
    if len(shapes) != 1:
        raise OodbenchError(f"{archive}: images of several sizes {sorted(shapes)[:3]}; set `size` to resize")
    return np.stack([decoded[name] for name in sorted(decoded)])


def prepare(
    archive: Path, sha256: str | None, member_glob: str, cache_dir: Path, size: int | None
) -> tuple[np.ndarray, str]:
    """Verify and decode ``archive`` into the cache; return (images, archive sha256)."""
    digest = verify_sha256(archive, sha256, archive.name)
    target = cache_dir / "prepared" / f"{archive.name}.{digest[:16]}.{size or 'orig'}.npy"
    return cached_array(target, lambda: _decode_archive(archive, member_glob, size)), digest


def load_archive_set(
    name: str,
    archive: str,
    data_dir: str,
    cache_dir: str,
    sha256: str | None = None,
    member_glob: str = "*",
    size: int | None = None,
    url: str = "",
    exact: str = "",
) -> ImageSet:
    """Load an image archive found at ``data_dir/archive`` (see module docstring)."""
    path = require_file(Path(data_dir) / archive, f"OOD set {name}", f"download from {url or 'its source'}")
    images, digest = prepare(path, sha256, member_glob, Path(cache_dir), size)
    return ImageSet(
        name=name,
        images=images,
        labels=None,
        source=exact or f"archive {archive}",
        n_total=len(images),
        indices=np.arange(len(images)),
        content_id=f"archive:{digest}:{member_glob}:{size}",
    )
