"""Hostile use (issue 9): changed files, cut result files, wrong resolutions, bad options, full disks, concurrent
runs. Each gives the right number or one clear line and exit 2 — never a stale result or a traceback."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from oodbench.errors import OodbenchError
from oodbench.paths import REPO_ROOT

SMALL = ["protocol.max_id=120", "protocol.max_ood=120", "protocol.bootstrap=10"]


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout[-1500:] + proc.stderr[-1500:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oodbench: error: "), proc.stderr
    return lines[0]


def _rows(proc: subprocess.CompletedProcess) -> pd.DataFrame:
    (path,) = sorted(Path(proc.args[-2].split("=", 1)[1]).glob("**/metrics.csv"))[-1:]
    return pd.read_csv(path)


def _folder(root: Path, n: int, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
    return root


def _folder_set(path: Path, size: int = 32) -> str:
    return (f"+ood.mine={{_target_: oodbench.data.folders.load_image_folder, name: mine, folder: {path.name}, "
            f"size: {size}}}")


# ------------------------------------------------------------------------------------------- stale results

def test_replaced_checkpoint_is_recomputed_with_its_new_sha(run_cli, shared_weights, tmp_path):
    ckpt = tmp_path / "final.pt"
    shutil.copy(shared_weights / "odin_densenet10.pth", ckpt)
    args = (f"arch.checkpoint={ckpt}", "arch.normalization=odin", "ood=[gaussian]", "detector=msp", *SMALL)
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    shutil.copy(shared_weights / "dice_cifar10_densenet_checkpoint_100.pth.tar", ckpt)  # same path, other bytes
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "nothing recomputed" not in second.stdout and "its inputs changed" in second.stdout + second.stderr
    old, new = _rows(first).iloc[0], _rows(second).iloc[0]
    assert old.checkpoint_sha256 != new.checkpoint_sha256 and new.checkpoint_sha256.startswith(
        __import__("oodbench.models.registry", fromlist=["CHECKPOINTS"]).CHECKPOINTS["dice_densenet_cifar10"].sha256)
    assert old.id_acc != new.id_acc
    third = run_cli(*args)
    assert "stored result, nothing recomputed" in third.stdout  # unchanged inputs: served, not recomputed


def test_changed_dice_stats_file_is_recomputed(run_cli, tmp_path):
    """A file a detector reads besides the checkpoint (DICE's mean feature) is part of the result's identity."""
    stats = tmp_path / "m.npy"
    np.save(stats, np.linspace(0, 1, 342))
    args = ("detector=dice", f"detector.feature_stats={stats}", "ood=[gaussian]", "result_set=unit", *SMALL)
    first = run_cli(*args, results=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "nothing recomputed" in run_cli(*args, results=tmp_path).stdout
    np.save(stats, np.linspace(1, 0, 342))  # same path, other bytes
    third = run_cli(*args, results=tmp_path)
    assert third.returncode == 0 and "nothing recomputed" not in third.stdout
    assert "its inputs changed" in third.stdout + third.stderr


def test_deleted_folder_images_are_recomputed(run_cli, shared_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for item in shared_data.iterdir():
        (data / item.name).symlink_to(item)
    mine = _folder(data / "mine", 100)
    args = (f"paths.data={data}", "ood=[gaussian]", _folder_set(mine), "detector=msp", *SMALL)
    assert _rows(run_cli(*args)).set_index("ood_dataset").loc["mine", "n_ood"] == 100
    for f in sorted(mine.iterdir())[:60]:
        f.unlink()
    again = run_cli(*args)
    assert "nothing recomputed" not in again.stdout
    assert _rows(again).set_index("ood_dataset").loc["mine", "n_ood"] == 40


def test_cut_result_file_is_recomputed_not_served(run_cli, tmp_path):
    args = ("detector=msp", "ood=[gaussian,uniform]", "result_set=unit", *SMALL)
    assert run_cli(*args, results=tmp_path).returncode == 0
    (stored,) = (tmp_path / "runs" / "unit").glob("*.csv")
    full = stored.read_text().splitlines()
    stored.write_text("\n".join(full[:2]) + "\n")  # header + 1 of 2 rows
    again = run_cli(*args, results=tmp_path)
    assert again.returncode == 0 and "nothing recomputed" not in again.stdout
    assert "incomplete: 1 rows" in again.stdout + again.stderr
    assert len(pd.read_csv(stored)) == 2
    df = pd.read_csv(stored).astype({"auroc": object})
    df.loc[0, "auroc"] = "abc"  # text in a numeric column
    df.to_csv(stored, index=False)
    third = run_cli(*args, results=tmp_path)
    assert "nothing recomputed" not in third.stdout and "holds a non-number" in third.stdout + third.stderr
    stored.write_bytes(os.urandom(300))  # binary garbage
    assert "nothing recomputed" not in run_cli(*args, results=tmp_path).stdout


# ------------------------------------------------------------------------------------- checks before work

def test_resolution_mismatch_is_refused(run_cli, shared_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for item in shared_data.iterdir():
        (data / item.name).symlink_to(item)
    big = _folder(data / "big", 5, size=64)
    line = _error_line(run_cli(f"paths.data={data}", _folder_set(big, size=64), "ood=[gaussian]", *SMALL))
    assert "OOD set mine has 64x64 images but the network takes 32x32" in line and "ood.<name>.size" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("ood=[]",), "no OOD set given (ood=[])"),
        (("protocol.max_ood=0",), "protocol.max_ood=0 is not allowed; use null or a whole number >= 1"),
        (("paths.cache=/etc/hostname/sub",), "cache directory /etc/hostname/sub is not writable"),
        (("detector=energy", "detector.temperature=0"), "temperature must be > 0"),
    ],
)
def test_bad_options_fail_before_any_model_work(run_cli, args, expected):
    ood = [] if any(a.startswith("ood") for a in args) else ["ood=[gaussian]"]
    proc = run_cli(*SMALL, *ood, *args)  # args last: they override SMALL
    line = _error_line(proc)
    assert expected in line
    assert "cache miss" not in proc.stderr  # nothing was forwarded


def test_sweep_whose_every_cell_fails_exits_2(run_cli):
    proc = run_cli("-m", "detector=energy", "detector.temperature=0,-1", "ood=[gaussian]", *SMALL)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("oodbench: error: 2 of 2 cells failed")


# ------------------------------------------------------------------------------------ disk and bad outputs

def test_disk_full_during_a_cache_write_is_one_clear_error(monkeypatch, tmp_path):
    from oodbench.runner import cache as cache_mod
    from oodbench.runner.checks import write_failure
    from oodbench.runner.forward import Representations

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod.RepresentationCache, "_write", full)
    store = cache_mod.RepresentationCache(tmp_path)
    with pytest.raises(OSError) as info:
        store.get_or_compute("k" * 64, lambda: Representations(torch.ones(1, 2), torch.ones(1, 2)), "x")
    err = write_failure(info.value, tmp_path, "the representation cache entry of x")
    assert isinstance(err, OodbenchError) and "the disk is full" in str(err) and "\n" not in str(err)


def test_non_finite_logits_are_refused_and_never_cached(monkeypatch, tmp_path):
    from oodbench.data.base import ImageSet
    from oodbench.runner import session as main_mod
    from oodbench.runner.forward import Representations

    monkeypatch.setattr(main_mod, "extract", lambda *a, **k: Representations(
        torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]), torch.zeros(2, 3)))
    session = main_mod.Session(torch.nn.Linear(3, 2), {"sha256": "0" * 64, "name": "broken"}, torch.device("cpu"),
                               main_mod.RepresentationCache(tmp_path), batch_size=2)
    data = ImageSet("toy", np.zeros((2, 2, 2, 3), np.uint8), None, "toy", 2, np.arange(2), "toy")
    with pytest.raises(OodbenchError, match="non-finite logits or features on 1 images of toy"):
        session.representations(data)
    assert not list(tmp_path.rglob("*.npz"))


def test_stored_header_has_no_nan_and_registered_file_by_path_needs_no_normalization(run_cli, shared_weights,
                                                                                      tmp_path):
    ckpt = tmp_path / "mine.pth.tar"
    shutil.copy(shared_weights / "dice_cifar10_densenet_checkpoint_100.pth.tar", ckpt)
    args = (f"arch.checkpoint={ckpt}", "ood=[gaussian]", "detector=msp", *SMALL)
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-1500:]  # identified by its sha256: DICE's normalization is known
    second = run_cli(*args)
    assert "stored result" in second.stdout and "[nan]" not in second.stdout


# ------------------------------------------------------------------------------------------- concurrency

def test_two_concurrent_runs_give_one_identical_result(run_cli, tmp_path):
    env = dict(os.environ, OODBENCH_CACHE=str(run_cli.cache), OODBENCH_RESULTS=str(tmp_path / "results"),
               HYDRA_FULL_ERROR="0")
    cmd = [sys.executable, str(REPO_ROOT / "run.py"), "detector=maxlogit", "ood=[gaussian]", "result_set=conc", *SMALL]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    job_dirs = sorted(tmp_path.glob("outputs/*/*"))
    assert len(job_dirs) == 2  # one per process, even when both start in the same second
    metrics = [pd.read_csv(d / "metrics.csv") for d in job_dirs]
    assert metrics[0].auroc.tolist() == metrics[1].auroc.tolist()
    (stored,) = (tmp_path / "results" / "runs" / "conc").glob("*.csv")
    assert pd.read_csv(stored).auroc.tolist() == metrics[0].auroc.tolist()


# ------------------------------------------------------------------------------------------- make tables

def _make_tables(results: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OODBENCH_RESULTS=str(results), PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "make_tables.py"), "--only", "odin_table2"],
                          capture_output=True, text=True, env=env, timeout=300)


def test_make_tables_honours_oodbench_results(tmp_path):
    shutil.copytree(REPO_ROOT / "results" / "paper", tmp_path / "paper")
    shutil.copytree(REPO_ROOT / "results" / "runs" / "odin_table2", tmp_path / "runs" / "odin_table2")
    before = (REPO_ROOT / "results" / "tables" / "odin_table2.md").stat().st_mtime_ns
    proc = _make_tables(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tables" / "odin_table2.md").read_text() == (
        REPO_ROOT / "results" / "tables" / "odin_table2.md").read_text()
    assert (REPO_ROOT / "results" / "tables" / "odin_table2.md").stat().st_mtime_ns == before


@pytest.mark.parametrize("damage", ["truncated", "text", "binary"])
def test_make_tables_names_a_corrupt_run_file(tmp_path, damage):
    shutil.copytree(REPO_ROOT / "results" / "paper", tmp_path / "paper")
    runs = shutil.copytree(REPO_ROOT / "results" / "runs" / "odin_table2", tmp_path / "runs" / "odin_table2")
    victim = sorted(runs.glob("*.csv"))[0]
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    elif damage == "text":
        df = pd.read_csv(victim).astype({"auroc": object})
        df.loc[df.index[-1], "auroc"] = "abc"
        df.to_csv(victim, index=False)
    else:
        victim.write_bytes(bytes(range(256)) * 4)
    line = _error_line(_make_tables(tmp_path))
    assert str(victim) in line and "rerun" in line


def test_network_resolution_is_checked_both_ways(run_cli):
    line = _error_line(run_cli("id=imagenet_sample", "arch=efficientnet_lite0", "ood=[gaussian]", "detector=msp",
                               "protocol.bootstrap=10"))
    assert "OOD set gaussian has 32x32 images but the network takes 224x224" in line


def test_a_corrupt_archive_fails_its_set_only(run_cli, shared_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for item in shared_data.iterdir():
        if item.name != "ood":
            (data / item.name).symlink_to(item)
    (data / "ood").mkdir()
    (data / "ood" / "iSUN.tar.gz").write_bytes((shared_data / "ood" / "iSUN.tar.gz").read_bytes()[:100_000])
    proc = run_cli(f"paths.data={data}", "ood=[isun,gaussian]", "detector=msp", *SMALL)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "not run: isun: unusable:" in proc.stdout and "checksum mismatch" in proc.stdout
    assert "gaussian" in _rows(proc).query("status == 'ok'").ood_dataset.tolist()


def test_rows_without_input_ids_are_served_only_when_nothing_else_is_read(tmp_path):
    """Rows stored before input ids (format 1) match on checkpoint sha256 and counts, unless the detector now reads
    a file of its own (DICE's published mean feature): rows of that age never recorded one, so they are recomputed."""
    from oodbench.data.base import ImageSet
    from oodbench.store import Store, inputs_identity

    def toy(n: int) -> ImageSet:
        return ImageSet("toy", np.zeros((n, 2, 2, 3), np.uint8), None, "toy", n, np.arange(n), "toy")

    old = pd.DataFrame([{"status": "ok", "ood_dataset": "gaussian", "checkpoint_sha256": "a" * 64, "n_id": 3,
                         "n_ood": 4, "fpr95": 0.1, "auroc": 0.9}])
    path = tmp_path / "cell.csv"
    old.to_csv(path, index=False)
    plain = inputs_identity("a" * 64, toy(3), {"gaussian": toy(4)})
    store = Store(tmp_path, tmp_path)
    assert store.served(path, ["gaussian"], plain) is not None
    with_file = inputs_identity("a" * 64, toy(3), {"gaussian": toy(4)}, {"dice_mean_feature": "f" * 64})
    assert store.served(path, ["gaussian"], with_file) is None


# ------------------------------------------------------------------------------------------- issue 19

def test_another_normalization_is_never_served_the_old_number(run_cli, shared_weights, tmp_path):
    """``arch.normalization`` moves every number; it used to be in neither the run name, the inputs id nor the
    representation-cache key, so the second run below was served the first one's AUROC (92.23 for 94.47)."""
    ckpt = tmp_path / "w.pt"
    shutil.copy(shared_weights / "odin_densenet10.pth", ckpt)
    base = (f"arch.checkpoint={ckpt}", "ood=[gaussian]", "detector=msp", *SMALL)
    dice = run_cli(*base, "arch.normalization=dice")
    odin = run_cli(*base, "arch.normalization=odin")
    assert dice.returncode == 0 and odin.returncode == 0, odin.stderr[-2000:]
    assert "nothing recomputed" not in odin.stdout  # neither the stored row nor the cached representation of dice's
    assert _rows(dice).auroc.iloc[0] != _rows(odin).auroc.iloc[0]
    assert "nothing recomputed" in run_cli(*base, "arch.normalization=odin").stdout  # same config: served


def test_a_damaged_decoded_archive_is_rebuilt_not_used(run_cli, tmp_path):
    """A decoded archive under ``<cache>/prepared/`` carries the sha256 of its bytes; a damaged one is rebuilt (a
    log line says so), never used while the row claims the sha256-checked archive."""
    args = ("ood=[isun]", "detector=msp", "cache=false", *SMALL)
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    (npy,) = (run_cli.cache / "prepared").glob("iSUN.tar.gz.*.npy")
    raw = bytearray(npy.read_bytes())
    raw[-5000:-4000] = bytes(1000)  # zero a kilobyte of pixels: still a valid .npy file
    npy.write_bytes(bytes(raw))
    second = run_cli(*args, "rerun=true")  # recompute the cell: its pixels are read again
    assert second.returncode == 0 and "failed its sha256 check; rebuilding it" in second.stdout + second.stderr
    assert _rows(second).auroc.iloc[0] == _rows(first).auroc.iloc[0]


def test_a_truncated_kept_score_file_still_gives_a_summary(run_cli, tmp_path):
    """A damaged scores.npz in a multirun: the summary is still written, and names the cell whose scores are
    damaged (it used to be a BadZipFile warning and no summary.md)."""
    args = ("-m", "detector=msp,energy", "ood=[gaussian]", *SMALL)
    assert run_cli(*args).returncode == 0
    sweep = Path(run_cli.last_out)
    victim = sorted(sweep.glob("*/scores.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    from oodbench.runner.summary import summarize

    summarize(sweep)
    text = (sweep / "summary.md").read_text()
    assert "per-image scores damaged" in text and str(victim) in text


def test_folder_links_count_each_file_once_and_never_loop(run_cli, shared_data, tmp_path):
    """A linked folder is walked once, a linked file counts once, a link loop ends (issue 19: ``followlinks=True``
    could count a file twice or loop)."""
    data = tmp_path / "data"
    shutil.copytree(shared_data / "cifar10", data / "cifar10")
    folder = _folder(data / "mine", 6)
    os.symlink(folder, folder / "loop")  # a loop
    os.symlink(folder / "000.png", folder / "zzz.png")  # a second name for one file
    (data / "other").mkdir()
    os.symlink(folder, data / "other" / "again")  # the same folder reached twice is outside the set: not counted
    proc = run_cli(f"paths.data={data}", _folder_set(folder), "ood=[gaussian]", "detector=msp", *SMALL)
    assert proc.returncode == 0, proc.stderr[-1500:]
    row = _rows(proc).query("ood_dataset == 'mine'").iloc[0]
    assert int(row.n_ood) == 6 and "6 files" in row.ood_source


@pytest.mark.parametrize("kind", ["bomb", "truncated"])
def test_an_image_pillow_refuses_is_a_bad_image(run_cli, shared_data, tmp_path, kind):
    """A decompression bomb or a truncated file is named like any bad image, and skippable."""
    data = tmp_path / "data"
    shutil.copytree(shared_data / "cifar10", data / "cifar10")
    folder = _folder(data / "mine", 5)
    if kind == "bomb":
        Image.new("L", (20000, 20000)).save(folder / "bomb.png", optimize=True)  # 4e8 pixels > 2 × MAX_IMAGE_PIXELS
    else:
        raw = (folder / "000.png").read_bytes()
        (folder / "cut.png").write_bytes(raw[: len(raw) // 2])
    bad = "bomb.png" if kind == "bomb" else "cut.png"
    proc = run_cli(f"paths.data={data}", _folder_set(folder), "ood=[gaussian]", "detector=msp", *SMALL)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr  # the set fails, the others run
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("not run: mine: unusable: "))
    assert f"1 unreadable image file(s) in OOD set mine under {folder}: {bad} " in line  # today's folder and file
    skip = run_cli(f"paths.data={data}", _folder_set(folder), "ood=[gaussian]", "detector=msp", *SMALL,
                   "+ood.mine.on_bad_image=skip")
    assert skip.returncode == 0 and int(_rows(skip).query("ood_dataset == 'mine'").n_ood.iloc[0]) == 5
