"""Test sets generated rather than read: ODIN's Gaussian / Uniform noise and TinyImageNet (crop).

Noise as ODIN's ``calData.py`` makes it: per image N(0.5, 1) clipped to [0, 1], or U[0, 1], in pixel space
before normalization, not quantized to 8 bits. Seeded, so the same (seed, n) gives the same images.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from oodbench.data.archives import prepare
from oodbench.data.base import ImageSet
from oodbench.data.files import require_file
from oodbench.errors import OodbenchError

_NOISE = {
    "gaussian": lambda rng, shape: np.clip(rng.normal(0.5, 1.0, shape), 0.0, 1.0),
    "uniform": lambda rng, shape: rng.uniform(0.0, 1.0, shape),
}


def make_noise(
    name: str, kind: str, n: int = 10000, size: int = 32, seed: int = 0, data_dir: str = "", cache_dir: str = ""
) -> ImageSet:
    """``n`` noise images of ``kind`` (gaussian / uniform); float32 pixels in [0, 1] (no files are read)."""
    if kind not in _NOISE:
        raise ValueError(f"noise kind {kind!r}: choose from {sorted(_NOISE)}")
    rng = np.random.default_rng(seed)
    images = _NOISE[kind](rng, (n, size, size, 3)).astype(np.float32)
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
    full, digest = prepare(path, sha256, member_glob, Path(cache_dir), size=None)
    rng = np.random.default_rng(seed)
    h, w = full.shape[1:3]
    ys = rng.integers(0, h - crop + 1, len(full))
    xs = rng.integers(0, w - crop + 1, len(full))
    images = np.stack([im[y : y + crop, x : x + crop] for im, y, x in zip(full, ys, xs)])
    if jpeg_quality is not None:
        images = np.stack([_jpeg_roundtrip(im, int(jpeg_quality)) for im in images])
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
