"""Content-keyed on-disk cache of representations, so one forward pass serves every detector and sweep.

The key hashes everything that determines the arrays — checkpoint sha256, data content id, the exact official
indices, the input transform, the layer spec, dtype and this module's format version — never a user string,
so a changed checkpoint or subset can never hit a stale entry. Entries are written to a temp file and renamed
(safe with several multirun jobs writing at once); a truncated or foreign file is detected and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from oodbench.data.files import atomic_savez
from oodbench.runner.forward import Representations

FORMAT_VERSION = 1
log = logging.getLogger(__name__)


def cache_key(**parts: object) -> str:
    payload = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class RepresentationCache:
    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = Path(root) / "representations"
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def _read(self, path: Path, key: str) -> Representations | None:
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    raise ValueError("key mismatch")
                return Representations(torch.from_numpy(z["logits"]), torch.from_numpy(z["features"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("cache entry %s unusable (%s); rebuilding", path.name, err)
            path.unlink(missing_ok=True)
            return None

    def get_or_compute(self, key: str, compute: Callable[[], Representations], label: str) -> Representations:
        path = self.path(key)
        if self.enabled and path.is_file():
            reps = self._read(path, key)
            if reps is not None:
                self.hits += 1
                log.info("cache hit  %-14s %s (%.1f MB)", label, key[:12], path.stat().st_size / 1e6)
                return reps
        self.misses += 1
        reps = compute()
        if self.enabled:
            atomic_savez(path, key=np.array(key), **reps.as_arrays())
            log.info("cache miss %-14s %s (stored %.1f MB)", label, key[:12], path.stat().st_size / 1e6)
        return reps
