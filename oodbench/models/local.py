"""Checkpoint files given by path (``arch.checkpoint=...``) for the networks built outside the registry."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from ..errors import CheckpointError


def local_file(checkpoint: str, weights_dir: str | Path | None) -> Path:
    """``checkpoint`` as a path: absolute, or relative to the working dir, else to ``weights_dir``; must exist."""
    path = Path(checkpoint).expanduser()
    if not path.is_absolute() and weights_dir is not None and not path.exists():
        path = Path(weights_dir) / path
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; check arch.checkpoint")
    return path


def load_strict(net: nn.Module, state: Mapping[str, Tensor], path: Path, what: str) -> None:
    """``net.load_state_dict(state, strict=True)``, a mismatch as one line naming the file and the network."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit {what}: {first}") from None
