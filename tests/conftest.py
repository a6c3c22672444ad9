"""Shared fixtures: where the real data/weights are, and an isolated cache/results dir per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from oodbench.paths import REPO_ROOT, resolve


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = resolve("data")
    if not (path / "cifar10" / "cifar10-exact-subset.npz").is_file():
        pytest.skip(f"real data not found at {path} (set OODBENCH_DATA to shared/data)")
    return path


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    path = resolve("weights")
    if not (path / "odin_densenet10.pth").is_file():
        pytest.skip(f"published checkpoints not found at {path} (set OODBENCH_WEIGHTS to shared/weights)")
    return path


@pytest.fixture(scope="session")
def run_cli(tmp_path_factory, shared_data, shared_weights):
    """Run ``python run.py ...`` in a subprocess with a session-wide temp cache and per-call results dir."""
    cache = tmp_path_factory.mktemp("cache")

    def _run(*args: str, results: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, OODBENCH_CACHE=str(cache), OODBENCH_DATA=str(shared_data),
                   OODBENCH_WEIGHTS=str(shared_weights), HYDRA_FULL_ERROR="0")
        if results is not None:
            env["OODBENCH_RESULTS"] = str(results)
        out = tmp_path_factory.mktemp("out")
        _run.last_out = out
        return subprocess.run(
            [sys.executable, str(REPO_ROOT / "run.py"), *args, f"hydra.run.dir={out}", f"hydra.sweep.dir={out}"],
            capture_output=True, text=True, env=env, cwd=cwd or REPO_ROOT, timeout=600,
        )

    _run.cache = cache
    return _run
