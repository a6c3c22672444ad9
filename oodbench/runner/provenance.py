"""Provenance every result row carries, and atomic CSV writes."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

import pandas as pd
import torch

import oodbench
from oodbench.data.files import atomic_write_bytes
from oodbench.errors import OodbenchError
from oodbench.paths import REPO_ROOT
from oodbench.runner.forward import numeric_mode


@functools.cache
def git_commit() -> str:
    """The repo's HEAD commit, with ``+dirty`` when tracked files other than ``results/`` (what runs write) are
    modified, read once per process: a multirun whose checkout moves on while it runs still records the code it
    loaded, and a run after a run that stored rows is not called dirty.

    Outside a git checkout (e.g. a copy of the tree on a GPU machine) ``OODBENCH_GIT_COMMIT`` says it, else
    ``unknown``.
    """
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"], cwd=REPO_ROOT,
            capture_output=True, text=True
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("OODBENCH_GIT_COMMIT", "unknown")


def environment(device: torch.device) -> dict[str, str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "oodbench_version": oodbench.__version__,
        "torch_version": torch.__version__,
        "device": f"{device.type}:{name}",
        "git_commit": git_commit(),
        **numeric_mode(),  # tf32_matmul, tf32_cudnn, amp_dtype
    }


def stable_hash(obj: object, n: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` atomically; a clear error if the directory is not writable."""
    try:
        atomic_write_bytes(Path(path), lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))
    except OSError as err:
        raise OodbenchError(
            f"cannot write results to {path} ({err.strerror}); set paths.results or OODBENCH_RESULTS to a writable dir"
        ) from None
