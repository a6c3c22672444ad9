"""Provenance every result row carries: the code's git commit, library versions, device and numeric mode."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

import torch

import oodbench
from oodbench.paths import REPO_ROOT
from oodbench.runner.forward import numeric_mode


@functools.cache
def git_commit() -> str:
    """The repo's HEAD commit, with ``+dirty`` when tracked files other than ``results/`` (what runs write) are
    modified, read once per process: a multirun whose checkout moves on while it runs still records the code it
    loaded, and a run after a run that stored rows is not called dirty.

    Outside a git checkout (an installed package, a copy of the tree on a GPU machine) ``OODBENCH_GIT_COMMIT`` says
    it, else ``none (installed oodbench <version>)``.
    """
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        if Path(top).resolve() != REPO_ROOT.resolve():  # an installed package inside someone else's repository
            raise OSError("not an oodbench checkout")
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"], cwd=REPO_ROOT,
            capture_output=True, text=True
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("OODBENCH_GIT_COMMIT", f"none (installed oodbench {oodbench.__version__})")


def device_text(device: torch.device) -> str:
    """``cpu (x86_64)`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``: what every row and the console record."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device.type} ({platform.processor() or platform.machine() or 'cpu'})"


def environment(device: torch.device) -> dict[str, str]:
    return {
        "oodbench_version": oodbench.__version__,
        "torch_version": torch.__version__,
        "device": device_text(device),
        "git_commit": git_commit(),
        **numeric_mode(),  # tf32_matmul, tf32_cudnn, amp_dtype
    }
