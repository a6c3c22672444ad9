"""oodbench as a package (issue 18): a wheel built from this checkout, installed into a fresh virtual environment,
runs a job from a directory outside the repository (configs shipped inside the package, defaults under
``~/.cache/oodbench``), ``oodbench --help`` lists the groups and choices; and every relative path is relative to the
directory the command was typed in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oodbench.paths import REPO_ROOT

SMALL = ["protocol.max_id=100", "protocol.max_ood=100", "protocol.bootstrap=10"]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A virtual environment (seeing this machine's packages, so nothing is downloaded) with the wheel installed."""
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src"  # a copy of the sources: building writes build/ next to them, never into this checkout
    shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(".git", "results", "build", "dist", "outputs",
                                                                  "multirun", "*.egg-info", "__pycache__", ".*"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (root / "dist").glob("oodbench-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root / "venv")], check=True,
                   timeout=300)
    subprocess.run([str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return root / "venv"


@pytest.mark.slow
def test_the_installed_wheel_runs_a_job_outside_the_checkout(venv, tmp_path, shared_data, shared_weights):
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import oodbench; print(oodbench.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout.strip()
    assert where.startswith(str(venv)), where  # the installed copy, not this checkout
    env = {**os.environ, "OODBENCH_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}
    for var in ("OODBENCH_DATA", "OODBENCH_WEIGHTS", "OODBENCH_RESULTS"):
        env.pop(var, None)
    proc = subprocess.run([str(venv / "bin" / "oodbench"), "detector=energy", "ood=[gaussian]", *SMALL,
                           f"paths.data={shared_data}", f"paths.weights={shared_weights}"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (rows,) = tmp_path.glob("outputs/*/*/metrics.csv")  # the run dir is below where the command was typed
    df = pd.read_csv(rows)
    assert df.status.tolist() == ["ok"] and df.git_commit.iloc[0].startswith("none (installed oodbench")
    assert f"rows: {rows}" in proc.stdout and "metrics in percent" in proc.stdout
    helped = subprocess.run([str(venv / "bin" / "oodbench"), "--help"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120)
    assert helped.returncode == 0 and "detector: ash, ash_b" in helped.stdout and "paper: " in helped.stdout
    same = subprocess.run([str(venv / "bin" / "python"), "-m", "oodbench", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert same.returncode == 0 and same.stdout == helped.stdout
    defaults = subprocess.run([str(venv / "bin" / "python"), "-c", "from oodbench.paths import resolve; "
                               "print(resolve('data'), resolve('results'))"], capture_output=True, text=True,
                              cwd=tmp_path, env=env, check=True).stdout.split()
    assert defaults == [str(tmp_path / "home" / ".cache" / "oodbench" / "data"),
                        str(tmp_path / "home" / ".cache" / "oodbench" / "results")]


# ------------------------------------------------------------------------------------------- relative paths

def _run(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), *args, *SMALL, "ood=[gaussian]"],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture()
def typed_here(tmp_path, shared_data, shared_weights, run_cli) -> tuple[Path, dict[str, str]]:
    """A directory the user types in, holding links to the data and weights; no absolute path in the environment."""
    here = tmp_path / "here"
    here.mkdir()
    os.symlink(shared_data, here / "d")
    os.symlink(shared_weights, here / "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OODBENCH_")}
    env["OODBENCH_CACHE"] = str(run_cli.cache)
    return here, env


@pytest.mark.parametrize("how", ["env", "config"])
def test_relative_data_and_weights_are_relative_to_where_the_command_was_typed(typed_here, how):
    here, env = typed_here
    args = ["paths.data=d", "paths.weights=w"] if how == "config" else []
    if how == "env":
        env = {**env, "OODBENCH_DATA": "d", "OODBENCH_WEIGHTS": "w"}
    proc = _run(here, "detector=msp", *args, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = pd.read_csv(next(here.glob("outputs/*/*/metrics.csv"))).iloc[0]
    assert row.checkpoint == "odin_densenet10" and row.status == "ok"


def test_a_relative_checkpoint_and_folder_are_relative_to_where_the_command_was_typed(typed_here, shared_weights):
    here, env = typed_here
    env = {**env, "OODBENCH_DATA": str(here / "d"), "OODBENCH_WEIGHTS": str(here / "w")}
    shutil.copy(shared_weights / "odin_densenet10.pth", here / "mine.pt")
    folder = here / "my images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), "detector=msp", "arch.checkpoint=mine.pt",
                           "arch.normalization=odin", "ood=[folder]", "ood.folder.path='my images'", *SMALL],
                          capture_output=True, text=True, cwd=here, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = pd.read_csv(next(here.glob("outputs/*/*/metrics.csv"))).iloc[0]
    assert row.status == "ok" and int(row.n_ood) == 12 and str(folder) in row.ood_source
    assert row.checkpoint == "odin_densenet10"  # a copy of the registered file: its sha256 names it
