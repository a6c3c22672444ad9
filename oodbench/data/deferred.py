"""Images made on first use: an image set is described — count, image size, content id, the protocol's subset —
without decoding or generating a pixel, and only the images a run scores are ever made.

:class:`DeferredImages` stands in for an ``ImageSet.images`` array: ``len``, ``shape``, ``dtype`` are known up
front; ``x[int_array]`` / ``x[bool_mask]`` (``ImageSet.select``, ``protocol_subset``) is another deferred view; the
first ``x[i]``, ``x[a:b]`` or ``np.asarray(x)`` calls ``make(positions)`` once for the view's positions (one pass
over an archive decodes exactly those members; a noise generator draws its stream once) and keeps the result. A
stored result is served without making anything (``runner.main``: the store is checked before any pixel).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class DeferredImages:
    """``(n, h, w, 3)`` images of ``dtype``, made by ``make(positions)`` for the positions of this view."""

    ndim = 4

    def __init__(self, make: Callable[[np.ndarray], np.ndarray], n: int, hw: tuple[int, int], dtype: Any,
                 positions: np.ndarray | None = None, what: str = "") -> None:
        self._make, self._n, self._hw, self.dtype = make, int(n), (int(hw[0]), int(hw[1])), np.dtype(dtype)
        self.positions = np.arange(self._n) if positions is None else np.asarray(positions, dtype=np.int64)
        self.what = what
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.positions)

    def __repr__(self) -> str:
        state = "made" if self._array is not None else "deferred"
        return f"DeferredImages({len(self)} of {self._n} {self.what}, {state})"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), *self._hw, 3)

    @property
    def made(self) -> bool:
        return self._array is not None

    def materialize(self) -> np.ndarray:
        if self._array is None:
            arr = np.asarray(self._make(self.positions))
            if arr.shape != self.shape:
                raise ValueError(f"{self.what}: made {arr.shape} images, expected {self.shape}")
            self._array = arr.astype(self.dtype, copy=False)
        return self._array

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer, slice, tuple)):
            return self.materialize()[key]
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if self._array is not None or idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            return self.materialize()[idx]
        return DeferredImages(self._make, self._n, self._hw, self.dtype, self.positions[idx], self.what)

    def __getattr__(self, name: str) -> Any:
        """Array methods (``min``, ``astype``, ``mean``, ...) act on the made array."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.materialize()
        return arr if dtype is None else arr.astype(dtype, copy=False)
