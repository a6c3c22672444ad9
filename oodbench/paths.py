"""Where oodbench looks for data, weights, its cache and results, and where its configs live.

Search order for each root (first hit wins):
  1. the explicit value in the config (``paths.data=...``), if set;
  2. the environment variable (``OODBENCH_DATA``, ``OODBENCH_WEIGHTS``, ``OODBENCH_CACHE``, ``OODBENCH_RESULTS``);
  3. the defaults: inside a checkout of this repository ``<repo>/../shared/data``, ``<repo>/../shared/weights``,
     ``~/.cache/oodbench`` and ``<repo>/results``; from an installed package ``~/.cache/oodbench/{data,weights,
     results}`` and ``~/.cache/oodbench``.

A relative value (1 or 2) is relative to the directory the command was started in (:func:`set_start_dir`; the CLI
sets it from Hydra's launch directory, so a job running elsewhere still reads what the user typed).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "conf"  # shipped inside the package (Hydra: pkg://oodbench.conf)
REPO_ROOT = PACKAGE_DIR.parent
IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "run.py").is_file()

_ENV = {
    "data": "OODBENCH_DATA",
    "weights": "OODBENCH_WEIGHTS",
    "cache": "OODBENCH_CACHE",
    "results": "OODBENCH_RESULTS",
}
_HOME_CACHE = Path.home() / ".cache" / "oodbench"
_DEFAULTS = {
    "data": REPO_ROOT.parent / "shared" / "data" if IN_CHECKOUT else _HOME_CACHE / "data",
    "weights": REPO_ROOT.parent / "shared" / "weights" if IN_CHECKOUT else _HOME_CACHE / "weights",
    "cache": _HOME_CACHE,
    "results": REPO_ROOT / "results" if IN_CHECKOUT else _HOME_CACHE / "results",
}
_START: list[Path] = []


def set_start_dir(path: str | os.PathLike) -> None:
    """The directory relative paths are resolved against (default: the current directory)."""
    _START[:] = [Path(path)]


def start_dir() -> Path:
    return _START[0] if _START else Path.cwd()


def absolute(value: str | os.PathLike) -> Path:
    """``value`` as an absolute path: ``~`` expanded, a relative one joined to :func:`start_dir`."""
    p = Path(value).expanduser()
    return (p if p.is_absolute() else start_dir() / p).resolve()


def resolve(kind: str, explicit: str | os.PathLike | None = None) -> Path:
    """Resolve the root directory of ``kind`` (data, weights, cache, results) by the search order above."""
    if kind not in _ENV:
        raise KeyError(f"unknown path kind {kind!r}; choose from {sorted(_ENV)}")
    if explicit not in (None, ""):
        return absolute(explicit)  # type: ignore[arg-type]
    env = os.environ.get(_ENV[kind])
    if env:
        return absolute(env)
    return _DEFAULTS[kind]
