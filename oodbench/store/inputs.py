"""The inputs id: what a cell's numbers are computed from, besides its config (which names its store file).

The checkpoint's sha256 (of the file actually loaded, or the parameter digest of an in-memory model), each image
set's content id, exact indices and count, every other file a detector reads (``Detector.inputs``), and the
result-format version. A stored row is served only when this matches.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import numpy as np

from oodbench.store.hashing import stable_hash

RESULT_FORMAT = 2  # bump when the meaning of a stored row changes


class Identified(Protocol):
    """What the store needs of an image set (an :class:`~oodbench.data.base.ImageSet`)."""

    content_id: str
    indices: np.ndarray

    def index_digest(self) -> str: ...

    def __len__(self) -> int: ...


def set_identity(data: Identified) -> dict[str, Any]:
    return {"content": data.content_id, "indices": data.index_digest(), "n": len(data)}


def inputs_identity(checkpoint_sha256: str, id_set: Identified, ood_sets: dict[str, Identified | None],
                    detector_inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """The inputs of one cell: the checkpoint, the sets (None: could not be loaded) and any file a detector reads
    (absent when none)."""
    identity: dict[str, Any] = {"format": RESULT_FORMAT, "checkpoint": checkpoint_sha256, "id": set_identity(id_set),
                                "ood": {k: None if v is None else set_identity(v) for k, v in ood_sets.items()}}
    if detector_inputs:
        identity["detector_inputs"] = dict(sorted(detector_inputs.items()))
    return identity


def inputs_id(identity: dict[str, Any]) -> str:
    return stable_hash(identity, 16)


def identity_columns(identity: dict[str, Any]) -> dict[str, str]:
    """The two row columns that carry the inputs: ``inputs_id`` (digest) and ``inputs`` (the JSON itself)."""
    return {"inputs_id": inputs_id(identity), "inputs": json.dumps(identity, sort_keys=True)}
