"""Test sets generated rather than read: ODIN's Gaussian / Uniform noise and TinyImageNet (crop).

Noise as ODIN's ``calData.py`` makes it: per image N(0.5, 1) clipped to [0, 1], or U[0, 1], in pixel space
before normalization, not quantized to 8 bits. Seeded, so the same (seed, n) gives the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oodbench.data.archives import prepare
from oodbench.data.base import ImageSet
from oodbench.data.files import require_file

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
    member_glob: str = "*", crop: int = 32, seed: int = 0, url: str = "",
) -> ImageSet:
    """TinyImageNet (crop): one seeded random ``crop``×``crop`` crop of each Tiny-ImageNet test image.

    An approximation of ODIN's set: ODIN cropped the same 10,000 images but did not publish the offsets.
    """
    path = require_file(Path(data_dir) / archive, f"OOD set {name}", f"download from {url}")
    full, digest = prepare(path, sha256, member_glob, Path(cache_dir), size=None)
    rng = np.random.default_rng(seed)
    h, w = full.shape[1:3]
    ys = rng.integers(0, h - crop + 1, len(full))
    xs = rng.integers(0, w - crop + 1, len(full))
    images = np.stack([im[y : y + crop, x : x + crop] for im, y, x in zip(full, ys, xs)])
    return ImageSet(
        name=name,
        images=images,
        labels=None,
        source=f"seeded {crop}x{crop} crops (seed {seed}) of Tiny-ImageNet test: approximates ODIN's crops",
        n_total=len(images),
        indices=np.arange(len(images)),
        content_id=f"tincrop:{digest}:{crop}:{seed}",
    )
