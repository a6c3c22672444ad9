"""Where oodbench looks for data, weights, its cache and results.

Search order for each root (first hit wins):
  1. the explicit value in the Hydra config (``paths.data=...``), if set;
  2. the environment variable (``OODBENCH_DATA``, ``OODBENCH_WEIGHTS``, ``OODBENCH_CACHE``, ``OODBENCH_RESULTS``);
  3. the defaults: ``<repo>/../shared/data`` and ``<repo>/../shared/weights`` (the layout of the development
     checkout), ``~/.cache/oodbench`` and ``<repo>/results``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

_ENV = {
    "data": "OODBENCH_DATA",
    "weights": "OODBENCH_WEIGHTS",
    "cache": "OODBENCH_CACHE",
    "results": "OODBENCH_RESULTS",
}
_DEFAULTS = {
    "data": REPO_ROOT.parent / "shared" / "data",
    "weights": REPO_ROOT.parent / "shared" / "weights",
    "cache": Path.home() / ".cache" / "oodbench",
    "results": REPO_ROOT / "results",
}


def resolve(kind: str, explicit: str | os.PathLike | None = None) -> Path:
    """Resolve the root directory of ``kind`` (data, weights, cache, results) by the search order above."""
    if kind not in _ENV:
        raise KeyError(f"unknown path kind {kind!r}; choose from {sorted(_ENV)}")
    if explicit not in (None, ""):
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(_ENV[kind])
    if env:
        return Path(env).expanduser().resolve()
    return _DEFAULTS[kind]
