"""Test sets generated rather than read: ODIN's Gaussian / Uniform noise and TinyImageNet (crop).

Noise as ODIN's ``calData.py`` makes it: per image N(0.5, 1) clipped to [0, 1], or U[0, 1], in pixel space
before normalization, not quantized to 8 bits. Seeded, so the same (seed, n) gives the same images.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from oodbench.data.archives import deferred_archive
from oodbench.data.base import ImageSet
from oodbench.data.deferred import DeferredImages
from oodbench.data.files import require_file, verify_sha256
from oodbench.errors import OodbenchError

_NOISE = {
    "gaussian": lambda rng, shape: np.clip(rng.normal(0.5, 1.0, shape), 0.0, 1.0),
    "uniform": lambda rng, shape: rng.uniform(0.0, 1.0, shape),
}


def make_noise(
    name: str, kind: str, n: int = 10000, size: int = 32, seed: int = 0, data_dir: str = "", cache_dir: str = ""
) -> ImageSet:
    """``n`` noise images of ``kind`` (gaussian / uniform); float32 pixels in [0, 1] (no files are read), generated
    when first needed (the seeded stream is drawn once for all ``n``, then the view's images are taken)."""
    if kind not in _NOISE:
        raise ValueError(f"noise kind {kind!r}: choose from {sorted(_NOISE)}")

    def make(positions: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return _NOISE[kind](rng, (n, size, size, 3)).astype(np.float32)[positions]

    images = DeferredImages(make, n, (size, size), np.float32, what=f"{kind} noise")
    return ImageSet(
        name=name,
        images=images,
        labels=None,
        source=f"generated {kind} noise (ODIN's recipe), seed {seed}",
        n_total=n,
        indices=np.arange(n),
        content_id=f"noise:{kind}:{n}:{size}:{seed}",
    )


def load_tin_crop(
    name: str, archive: str, data_dir: str, cache_dir: str, sha256: str | None = None,
    member_glob: str = "*", crop: int = 32, seed: int = 0, url: str = "", jpeg_quality: int | None = None,
) -> ImageSet:
    """TinyImageNet (crop): one seeded random ``crop``×``crop`` crop of each Tiny-ImageNet test image.

    An approximation of ODIN's set: ODIN cropped the same 10,000 images but did not publish the offsets.
    ``jpeg_quality``: store each crop as a JPEG of that quality (4:2:0 chroma, Pillow) and decode it again, the way
    ODIN's other sets are distributed (32x32 q75 4:2:0 JPEGs); None (default) keeps the decoded source pixels.
    """
    path = require_file(Path(data_dir) / archive, f"OOD set {name}", f"download from {url}")
    digest = verify_sha256(path, sha256, path.name)
    full = deferred_archive(path, digest, member_glob, Path(cache_dir), size=None)
    h, w = full.shape[1:3]
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, h - crop + 1, len(full))  # offsets drawn for every image, so a subset crops the same way
    xs = rng.integers(0, w - crop + 1, len(full))
    if jpeg_quality is not None and not 1 <= int(jpeg_quality) <= 100:
        raise OodbenchError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")

    def make(positions: np.ndarray) -> np.ndarray:
        source = full[positions]
        source = source.materialize() if isinstance(source, DeferredImages) else source
        out = np.stack([im[y : y + crop, x : x + crop] for im, y, x in zip(source, ys[positions], xs[positions])])
        return out if jpeg_quality is None else np.stack([_jpeg_roundtrip(im, int(jpeg_quality)) for im in out])

    images = DeferredImages(make, len(full), (crop, crop), np.uint8, what="TinyImageNet crops")
    tag = "" if jpeg_quality is None else f", stored as JPEG q{jpeg_quality} 4:2:0 and decoded"
    return ImageSet(
        name=name,
        images=images,
        labels=None,
        source=f"seeded {crop}x{crop} crops (seed {seed}) of Tiny-ImageNet test{tag}: approximates ODIN's crops",
        n_total=len(images),
        indices=np.arange(len(images)),
        content_id=f"tincrop:{digest}:{crop}:{seed}" + ("" if jpeg_quality is None else f":jpeg{jpeg_quality}"),
    )


def _jpeg_roundtrip(pixels: np.ndarray, quality: int) -> np.ndarray:
    """Encode as a baseline JPEG (4:2:0 chroma, Pillow's libjpeg-turbo) and decode again."""
    if not 1 <= quality <= 100:
        raise OodbenchError(f"jpeg_quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality, subsampling=2)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8)
