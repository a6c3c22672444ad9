"""File helpers shared by the loaders: sha256 checks, atomic writes, the on-disk cache of decoded arrays."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from oodbench.errors import DataNotAvailable, OodbenchError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def require_file(path: Path, what: str, hint: str) -> Path:
    """Return ``path`` if it exists, else raise the one-line 'not available: put X at Y' error."""
    if not path.is_file():
        raise DataNotAvailable(f"{what} not available: put it at {path} ({hint})")
    return path


def verify_sha256(path: Path, expected: str | None, what: str) -> str:
    """Checksum ``path``; raise if it differs from ``expected`` (None = accept and return the digest)."""
    digest = sha256_file(path)
    if expected and digest != expected:
        raise OodbenchError(
            f"{what}: checksum mismatch for {path} (sha256 {digest[:12]}…, expected {expected[:12]}…); "
            "the file is corrupt or a different version — download it again"
        )
    return digest


def atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename onto ``path``: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached_array(path: Path, build: Callable[[], np.ndarray]) -> np.ndarray:
    """Load a decoded-image array from the cache, (re)building it if absent or unreadable."""
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            path.unlink(missing_ok=True)  # truncated or foreign file: rebuild, never use
    arr = build()

    def _save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    atomic_write_bytes(path, _save)
    return arr


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` atomically (via a file object, so numpy adds no ``.npz`` suffix)."""

    def _save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write_bytes(path, _save)
