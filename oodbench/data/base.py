"""The in-memory image set every loader returns, and deterministic index selection."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from oodbench.errors import OodbenchError


@dataclass(frozen=True)
class ImageSet:
    """Images of one data set, in the set's official order, as pixels.

    ``images`` is (N, H, W, 3): uint8 (scaled by 1/255) or float32 already in pixel units [0, 1] (the noise
    sets, which ODIN does not quantize). ``indices`` are the positions of these images in the full official
    set (``n_total`` images), so a subset is always described exactly. ``content_id`` identifies the bytes the
    images came from (archive sha256 or generator spec) and feeds the representation-cache key.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    source: str
    n_total: int
    indices: np.ndarray
    content_id: str
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.images) != len(self.indices):
            raise ValueError("images and indices differ in length")

    def __len__(self) -> int:
        return len(self.images)

    def select(self, positions: np.ndarray, note: str | None = None) -> ImageSet:
        """A subset by positions into this set (not official indices); keeps provenance."""
        positions = np.asarray(positions, dtype=np.int64)
        return replace(
            self,
            images=self.images[positions],
            labels=None if self.labels is None else self.labels[positions],
            indices=self.indices[positions],
            notes=self.notes + ((note,) if note else ()),
        )

    def describe(self) -> str:
        """E.g. ``cifar10 test 1017/10000 (exact subset)``: what a result row records as its data source."""
        return f"{self.name} {len(self)}/{self.n_total} ({self.source})"

    def index_digest(self) -> str:
        """sha256 of the official indices, so the cache key covers exactly which images were used."""
        return hashlib.sha256(np.ascontiguousarray(self.indices, dtype=np.int64).tobytes()).hexdigest()[:16]

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Yield float32 NCHW tensors in [0, 1] (normalization belongs to the model's checkpoint)."""
        for start in range(0, len(self), batch_size):
            yield self.batch(start, batch_size)

    def batch(self, start: int, batch_size: int) -> torch.Tensor:
        """The batch of :meth:`batches` that begins at image ``start`` (what a DataLoader worker decodes)."""
        return to_tensor(self.images[start : start + batch_size])


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N,H,W,3) uint8 or float pixels → (N,3,H,W) float32 in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.float().div_(255.0) if images.dtype == np.uint8 else x.float()


def protocol_subset(
    data: ImageSet, holdout: int = 0, max_images: int | None = None, seed: int = 0
) -> ImageSet:
    """Drop the first ``holdout`` images (ODIN's tuning split), then keep at most ``max_images`` of the rest.

    Subsampling is a seeded draw without replacement, kept in the set's order, so the same (set, seed, n)
    always gives the same images. Recorded in the set's notes.
    """
    if len(data) == 0:
        raise OodbenchError(f"data set {data.name} is empty; check its files under the data directory")
    positions = np.arange(len(data))
    notes = []
    if holdout:
        if holdout >= len(data):
            raise OodbenchError(
                f"{data.name}: holdout of {holdout} leaves no images (set has {len(data)}); lower protocol holdout"
            )
        positions = positions[holdout:]
        notes.append(f"first {holdout} held out")
    if max_images is not None and len(positions) > max_images:
        rng = np.random.default_rng(seed)
        positions = np.sort(rng.choice(positions, size=max_images, replace=False))
        notes.append(f"seeded subsample {max_images} (seed {seed})")
    return data.select(positions, note="; ".join(notes) or None)
