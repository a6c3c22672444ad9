"""File helpers shared by the loaders: sha256 checks, atomic writes, the on-disk cache of decoded arrays.

Two promises:

* :func:`sha256_file` hashes a file once per version: the digest is remembered, in this process and in
  ``<cache>/digests/``, under the file's ``stat`` signature (device, inode, size, modification *and* change time in
  ns). Any write to the file changes its change time, which no user call can set back, so a remembered digest is
  never served for other bytes; a warm run does not re-read a 50 MB archive to learn what it already knows.
* Derived files (decoded archives under ``<cache>/prepared/``) carry the sha256 of their own bytes in a sidecar
  ``<file>.sha256`` written with them (:func:`write_verified`); :func:`read_verified` checks it on every use and a
  damaged or foreign file is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from oodbench.errors import DataNotAvailable, OodbenchError

FILE_MODE = 0o644  # result and cache files are readable by the group (shared cluster filesystems)
_DIGESTS: dict[tuple[str, tuple[int, ...]], str] = {}
_MEMO_DIR: list[Path] = []  # set by the run (its cache dir); default: the resolved cache root


def remember_digests_in(cache_dir: Path) -> None:
    """Keep remembered digests under ``<cache_dir>/digests/`` (the run's cache; default: the resolved one)."""
    _MEMO_DIR[:] = [Path(cache_dir) / "digests"]


def _signature(path: Path) -> tuple[int, ...]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _memo_file(path: Path) -> Path:
    from oodbench.paths import resolve  # the cache root (config, env, default); paths imports nothing of ours

    root = _MEMO_DIR[0] if _MEMO_DIR else resolve("cache") / "digests"
    return root / f"{hashlib.sha256(str(path).encode()).hexdigest()[:32]}.json"


def _hash(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: Path, remember: bool = True) -> str:
    """The sha256 of ``path``'s bytes; remembered under the file's stat signature (module docstring), so a file
    read again unchanged is not hashed again. ``remember=False`` always hashes."""
    path = Path(path).resolve()
    if not remember:
        return _hash(path)
    sig = _signature(path)
    key = (str(path), sig)
    if key in _DIGESTS:
        return _DIGESTS[key]
    memo = _memo_file(path)
    try:
        rec = json.loads(memo.read_text())
        if tuple(rec["signature"]) == sig and len(rec["sha256"]) == 64:
            _DIGESTS[key] = rec["sha256"]
            return rec["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = _hash(path)
    if _signature(path) == sig:  # unchanged while we read it
        _DIGESTS[key] = digest
        try:
            atomic_write_bytes(memo, lambda tmp: tmp.write_text(json.dumps({"path": str(path), "signature": sig,
                                                                              "sha256": digest})))
        except OSError:
            pass  # a read-only cache only costs the next run a re-hash
    return digest


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
    """Call ``write(tmp)`` then rename onto ``path`` (mode 0644): readers never see a half-written file, and an
    interrupted write leaves no temp file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600; results are shared with the group
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_verified(path: Path, write: Callable[[Path], None]) -> None:
    """Write a derived file atomically, then its sidecar ``<file>.sha256`` holding the digest of its bytes."""
    atomic_write_bytes(path, write)
    digest = sha256_file(path)
    atomic_write_bytes(_sidecar(path), lambda tmp: tmp.write_text(digest + "\n"))


def read_verified(path: Path) -> bool:
    """Whether ``path`` exists and its bytes have the digest its sidecar recorded; a file that does not (damaged,
    cut, replaced, or written before sidecars) is removed with its sidecar, so the caller rebuilds it."""
    if not path.is_file():
        return False
    try:
        recorded = _sidecar(path).read_text().strip()
    except OSError:
        recorded = ""
    ok = bool(recorded) and recorded == sha256_file(path)
    if not ok:
        import logging

        why = "failed its sha256 check" if recorded else "has no recorded sha256"
        logging.getLogger("oodbench").warning("cache file %s %s; rebuilding it", path.name, why)
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)
    return ok


def cached_array(path: Path, build: Callable[[], np.ndarray]) -> np.ndarray:
    """Load a decoded-image array from the cache if its bytes check out (:func:`read_verified`), else (re)build
    and store it with its digest."""
    if read_verified(path):
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            path.unlink(missing_ok=True)  # a foreign file with a matching sidecar: rebuild, never use
    arr = build()

    def _save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    write_verified(path, _save)
    return arr


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` atomically (via a file object, so numpy adds no ``.npz`` suffix)."""

    def _save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write_bytes(path, _save)
