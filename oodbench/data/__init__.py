"""Data: every loader returns an :class:`~oodbench.data.base.ImageSet` (pixels, official indices, provenance)."""

from oodbench.data.base import ImageSet, protocol_subset, to_tensor

__all__ = ["ImageSet", "protocol_subset", "to_tensor"]
