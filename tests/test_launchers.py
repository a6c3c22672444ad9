"""Parallel sweeps: the representation cache under concurrent workers (lock, stale locks, orphaned temp files)
and the same ASH p-sweep through Hydra's basic, joblib and submitit_local launchers (identical rows, one forward
pass per (checkpoint, image set))."""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import oodbench.runner.cache as cache_mod
from oodbench.paths import REPO_ROOT
from oodbench.runner.cache import FileLock, RepresentationCache, clean_orphans
from oodbench.runner.forward import Representations


def _compute(counter: Path, delay: float) -> Representations:
    with open(counter, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(delay)
    return Representations(torch.arange(6.0).view(2, 3), torch.ones(2, 4))


def _worker(root: str, counter: str, out: str) -> None:
    reps = RepresentationCache(Path(root)).get_or_compute("ab" * 32, lambda: _compute(Path(counter), 1.0), "toy")
    Path(out).write_text(str(reps.logits.sum().item()))


def test_two_processes_compute_a_key_once(tmp_path):
    counter = tmp_path / "computed.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), str(counter), str(tmp_path / f"out{i}")))
             for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(counter.read_text().split()) == 1  # one forward pass, the others waited and read it
    assert {(tmp_path / f"out{i}").read_text() for i in range(3)} == {"15.0"}
    assert not list((tmp_path / "representations").rglob("*.lock"))
    assert not list((tmp_path / "representations").rglob("*.tmp"))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_of_a_killed_writer_is_broken(tmp_path, caplog):
    cache = RepresentationCache(tmp_path)
    key = "cd" * 32
    lock = cache.path(key).with_name(cache.path(key).name + ".lock")
    lock.parent.mkdir(parents=True)
    pid = _dead_pid()
    lock.write_text(f"{cache_mod.HOST} {pid}\n{cache_mod.HOST} {pid} 1\n")
    counter = tmp_path / "computed.txt"
    reps = cache.get_or_compute(key, lambda: _compute(counter, 0.0), "toy")
    assert reps.logits.shape == (2, 3) and counter.read_text().split() == [str(os.getpid())]
    assert "broken: its writer (pid" in caplog.text and not lock.exists()


def test_lock_of_another_host_is_broken_only_when_its_heartbeat_stops(tmp_path, monkeypatch):
    lock_path = tmp_path / "x.lock"
    lock_path.write_text("otherhost 1\notherhost 1 5\n")
    lock = FileLock(lock_path)
    assert lock.stale_reason(lock_path.read_text()) is None  # fresh: the remote holder may be alive
    old = time.time() - cache_mod.STALE_S - 5
    os.utime(lock_path, (old, old))
    assert "not refreshed" in lock.stale_reason(lock_path.read_text())
    monkeypatch.setattr(cache_mod, "POLL_S", 0.01)
    lock.acquire()
    assert str(os.getpid()) in lock_path.read_text()
    lock.release()
    assert not lock_path.exists()


def test_waiting_on_a_live_lock_times_out_with_one_line(tmp_path, monkeypatch):
    lock_path = tmp_path / "x.lock"
    lock_path.write_text(f"{cache_mod.HOST} {os.getppid()}\n")  # alive (our parent), fresh
    monkeypatch.setattr(cache_mod, "POLL_S", 0.01)
    with pytest.raises(cache_mod.OodbenchError, match="waited 0s for cache lock .* delete the lock file"):
        FileLock(lock_path).acquire(timeout=0.05)


def test_orphaned_temp_files_are_removed(tmp_path):
    d = tmp_path / "representations" / "ab"
    d.mkdir(parents=True)
    short = cache_mod.SHORT_HOST
    dead = d / f".{'ab' * 32}.npz.{short}.{_dead_pid()}.tmp"
    alive = d / f".{'ab' * 32}.npz.{short}.{os.getpid()}.tmp"
    remote_new = d / f".{'ab' * 32}.npz.otherhost.12.tmp"
    remote_old = d / f".{'ef' * 32}.npz.otherhost.13.tmp"
    for p in (dead, alive, remote_new, remote_old):
        p.write_bytes(b"partial")
    old = time.time() - cache_mod.ORPHAN_S - 5
    os.utime(remote_old, (old, old))
    assert clean_orphans(tmp_path / "representations") == 2
    assert sorted(p.name for p in d.iterdir()) == sorted([alive.name, remote_new.name])
    RepresentationCache(tmp_path)  # opening a cache cleans too
    assert alive.exists()


# --- Hydra launchers ------------------------------------------------------------------------------------

SWEEP = ["detector=ash", "arch.weights=dice", "detector.variant=s", "detector.p=80,90", "ood=[isun,gaussian]",
         "protocol.max_id=150", "protocol.max_ood=150", "protocol.bootstrap=20"]
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
}
METRICS = ["fpr95", "auroc", "aupr_in", "aupr_out", "detection_error", "fpr95_oodpos", "fpr95_std", "auroc_std"]


def _have(plugin: str) -> bool:
    return importlib.util.find_spec(f"hydra_plugins.{plugin}") is not None


@pytest.mark.slow
def test_parallel_launchers_give_the_sequential_rows_with_one_forward_pass_each(tmp_path, shared_data,
                                                                                 shared_weights):
    missing = [p for p in ("hydra_joblib_launcher", "hydra_submitit_launcher") if not _have(p)]
    if missing:
        pytest.skip(f"optional extra not installed ({', '.join(missing)}): pip install -e .[cluster]")
    cache = tmp_path / "cache"
    env = dict(os.environ, OODBENCH_CACHE=str(cache), OODBENCH_DATA=str(shared_data),
               OODBENCH_WEIGHTS=str(shared_weights), OODBENCH_RESULTS=str(tmp_path / "results"))
    rows = {}
    for name, launcher in LAUNCHERS.items():
        for stale in ("representations", "runs"):  # fresh forward passes and no stored cells; decoded data kept
            shutil.rmtree(cache / stale, ignore_errors=True)
        sweep = tmp_path / name
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), "-m", *launcher, *SWEEP,
                               f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, env=env,
                              cwd=REPO_ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        logs = "".join(p.read_text() for p in sweep.glob("*/oodbench.log"))
        misses = re.findall(r"cache miss (\S+)", logs)
        assert sorted(misses) == ["cifar10", "gaussian", "isun"], (name, misses)  # one pass per set
        assert len(re.findall(r"cache (?:hit|miss) ", logs)) == 6  # 2 cells x 3 sets
        df = pd.read_csv(sweep / "summary.csv")
        assert (~df.tf32_matmul).all() and (~df.tf32_cudnn).all() and set(df.amp_dtype) == {"none"}  # numeric mode
        rows[name] = df.sort_values(["detector_params", "ood_dataset"])[["detector_params", "ood_dataset", *METRICS]]
    assert len(rows["basic"]) == 4
    for name in ("joblib", "submitit_local"):
        pd.testing.assert_frame_equal(rows[name].reset_index(drop=True), rows["basic"].reset_index(drop=True))


def test_tf32_switch_and_numeric_mode():
    from oodbench.runner.forward import numeric_mode, set_tf32
    from oodbench.runner.provenance import environment

    try:
        set_tf32(True)
        assert numeric_mode() == {"tf32_matmul": True, "tf32_cudnn": True, "amp_dtype": "none"}
        set_tf32(False)
        assert numeric_mode() == {"tf32_matmul": False, "tf32_cudnn": False, "amp_dtype": "none"}
        env = environment(torch.device("cpu"))
        assert (env["tf32_matmul"], env["tf32_cudnn"], env["amp_dtype"]) == (False, False, "none")
    finally:
        set_tf32(False)
