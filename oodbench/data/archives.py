"""OOD test sets distributed as image archives (ODIN's iSUN, LSUN, TinyImageNet; Tiny-ImageNet test).

``prepare`` verifies the archive's sha256, decodes every image in ODIN's order (torchvision ``ImageFolder``
sorts file names as strings, so ``10.jpg`` precedes ``2.jpg``) and caches the uint8 array under the cache dir,
keyed by the archive digest. Later runs load the array in milliseconds.

``decoder``: ``pillow`` (default: Pillow's bundled libjpeg-turbo, which decodes these files bit-identically to IJG
libjpeg 6b) or ``libjpeg<version>`` (e.g. ``libjpeg9b``: IJG libjpeg 9b, which
upsamples 4:2:0 chroma in the DCT domain, so pixels differ) through the optional ``jpeglib`` package
(``pip install -e ".[jpeg]"``), for experiments on how the decoder moves a published comparison.
"""

from __future__ import annotations

import fnmatch
import io
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from oodbench.data.base import ImageSet
from oodbench.data.files import cached_array, require_file, verify_sha256
from oodbench.errors import OodbenchError

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")


def _jpeg_decoder(decoder: str) -> Callable[[bytes], Image.Image]:
    """``pillow`` or ``libjpeg<version>`` (any version the ``jpeglib`` package bundles: 6b, 7, 8d, 9b, 9e, ...)."""
    if decoder == "pillow":
        return lambda raw: Image.open(io.BytesIO(raw)).convert("RGB")
    version = decoder.removeprefix("libjpeg")
    try:
        import jpeglib
    except ImportError:
        raise OodbenchError(f"decoder={decoder} needs the jpeglib package: pip install -e '.[jpeg]'") from None
    if not decoder.startswith("libjpeg") or version not in jpeglib.version.versions():
        raise OodbenchError(f"unknown decoder {decoder!r}; use pillow or libjpeg<v> with v one of "
                            f"{', '.join(sorted(jpeglib.version.versions()))}")

    def decode(raw: bytes) -> Image.Image:
        if raw[:2] != b"\xff\xd8":  # not a JPEG (a PNG in the archive): Pillow
            return Image.open(io.BytesIO(raw)).convert("RGB")
        with tempfile.NamedTemporaryFile(suffix=".jpg") as f:
            f.write(raw)
            f.flush()
            with jpeglib.version(version):
                pixels = jpeglib.read_spatial(f.name).spatial
        return Image.fromarray(np.repeat(pixels, 3, -1) if pixels.shape[-1] == 1 else pixels)

    return decode


def _decode_archive(archive: Path, member_glob: str, size: int | None, decoder: str = "pillow") -> np.ndarray:
    """Decode in the archive's own order (one sequential pass: no gzip re-seeks), then sort by file name."""
    decoded: dict[str, np.ndarray] = {}
    decode = _jpeg_decoder(decoder)
    with tarfile.open(archive, "r:*") as tar:
        for m in tar:
            if not (m.isfile() and m.name.lower().endswith(_IMAGE_EXT) and fnmatch.fnmatch(m.name, member_glob)):
                continue
            img = decode(tar.extractfile(m).read())
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
    archive: Path, sha256: str | None, member_glob: str, cache_dir: Path, size: int | None, decoder: str = "pillow"
) -> tuple[np.ndarray, str]:
    """Verify and decode ``archive`` into the cache; return (images, archive sha256)."""
    _jpeg_decoder(decoder)  # an unknown decoder fails before any work
    digest = verify_sha256(archive, sha256, archive.name)
    tag = "" if decoder == "pillow" else f".{decoder}"
    target = cache_dir / "prepared" / f"{archive.name}.{digest[:16]}.{size or 'orig'}{tag}.npy"
    return cached_array(target, lambda: _decode_archive(archive, member_glob, size, decoder)), digest


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
    decoder: str = "pillow",
) -> ImageSet:
    """Load an image archive found at ``data_dir/archive`` (see module docstring)."""
    path = require_file(Path(data_dir) / archive, f"OOD set {name}", f"download from {url or 'its source'}")
    images, digest = prepare(path, sha256, member_glob, Path(cache_dir), size, decoder)
    tag = "" if decoder == "pillow" else f":{decoder}"  # the default keeps the ids of every stored row
    return ImageSet(
        name=name,
        images=images,
        labels=None,
        source=(exact or f"archive {archive}") + (f", decoded with {decoder}" if tag else ""),
        n_total=len(images),
        indices=np.arange(len(images)),
        content_id=f"archive:{digest}:{member_glob}:{size}{tag}",
    )
