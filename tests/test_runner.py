"""End to end through ``run.py`` on small real subsets, provenance, cache, resume, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from oodbench.data.base import ImageSet
from oodbench.detectors.base import LogitDetector
from oodbench.errors import OodbenchError
from oodbench.models.registry import CHECKPOINTS
from oodbench.runner.cache import RepresentationCache, cache_key
from oodbench.runner.forward import Representations
from oodbench.runner.scoring import ScoringContext, score_set

SMALL = ["protocol.max_id=150", "protocol.max_ood=150", "protocol.bootstrap=20"]


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("oodbench: error: ")
    return lines[0]


def _metrics(proc) -> pd.DataFrame:
    runs = sorted(Path(proc.args[-2].split("=", 1)[1]).glob("**/metrics.csv"))
    return pd.read_csv(runs[-1])


def test_end_to_end_energy_on_real_subset(run_cli):
    # textures made unavailable on purpose: the test must not depend on which optional data is present
    proc = run_cli("detector=energy", "id=cifar10", "ood=[gaussian,isun,textures]", "ood.textures.folder=absent",
                   *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not run: textures" in proc.stdout and "put its images under" in proc.stdout
    df = _metrics(proc)
    ok = df[df.status == "ok"].set_index("ood_dataset")
    assert ok.loc["gaussian", "auroc"] > 0.9
    assert 0.85 < ok.loc["isun", "auroc"] < 1.0  # published Energy/MSP range on DenseNet C10 vs iSUN: 0.94-0.96
    assert ok.loc["isun", "id_acc"] > 0.9
    row = ok.loc["isun"]
    assert row.checkpoint_sha256 == CHECKPOINTS["odin_densenet10"].sha256
    assert row.id_source.startswith("cifar10 150/10000 (exact subset") and row.n_id == 150 and row.n_ood == 150
    assert "seeded subsample 150" in row.ood_notes and row.protocol == "default"
    assert json.loads(row.config)["detector"]["temperature"] == 1.0
    assert row.git_commit and row.device.startswith("cpu")
    assert 0 < row.fpr95_std < 0.2 and np.isfinite(row.fpr95_oodpos)
    # a second detector on the same sets runs the network 0 times: everything comes from the cache
    proc2 = run_cli("detector=maxlogit", "id=cifar10", "ood=[gaussian,isun]", *SMALL)
    assert proc2.returncode == 0 and "hits=3 misses=0" in proc2.stdout


def test_experiment_rows_are_stored_and_resume_skips(run_cli, tmp_path):
    args = ("detector=msp", "ood=[gaussian]", "result_set=unit", *SMALL)
    first = run_cli(*args, results=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (stored,) = (tmp_path / "runs" / "unit").glob("*.csv")
    before = stored.read_bytes()
    again = run_cli(*args, results=tmp_path)
    assert again.returncode == 0 and "stored result, nothing recomputed" in again.stdout
    assert stored.read_bytes() == before


def test_sweep_records_a_failing_cell_and_goes_on(run_cli):
    proc = run_cli("-m", "detector=energy", "detector.temperature=0,1", "ood=[gaussian]", *SMALL)
    assert proc.returncode == 2, proc.stderr[-2000:]  # the sweep finishes every cell, then fails as a whole
    assert "cell failed" in proc.stderr and "temperature must be > 0" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("oodbench: error: 1 of 2 cells failed")
    assert proc.stdout.count("ood_dataset") == 1  # the good cell printed its table


def test_sweep_summary_prints_paired_intervals_also_for_served_cells(run_cli, tmp_path):
    args = ("-m", "detector=energy,msp", "ood=[gaussian,uniform]", "result_set=unit", *SMALL)
    for attempt in ("computed", "served from the store"):
        proc = run_cli(*args, results=tmp_path)
        assert proc.returncode == 0, (attempt, proc.stderr[-2000:])
        assert "## Paired comparisons against the best cell of each OOD set" in proc.stdout, attempt
        table = [ln for ln in proc.stdout.splitlines() if ln.startswith("| gaussian |") or ln.startswith("| uniform |")]
        assert len(table) == 2 and all("[" in ln and "]" in ln for ln in table), (attempt, table)
        assert "Not paired" not in proc.stdout, attempt
    assert proc.stdout.count("stored result, nothing recomputed") == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("detector=nosuch",), "unknown detector 'nosuch'; choose from: "),
        (("id=imagenet21k",), "unknown id 'imagenet21k'; choose from: cifar10, cifar100"),
        (("ood=[gaussian,nosuch]",), "unknown ood 'nosuch'"),
        (("paths.data=/nonexistent",), "cifar10 test not available: put torchvision's files under /nonexistent"),
        (("id=cifar100", "arch.checkpoint=odin_densenet10"), "has 10 classes but ID set cifar100 has 100"),
        (("arch=wrn40_2", "arch.checkpoint=odin_densenet10"), "is a densenet100, but arch=wrn40_2 was asked"),
        (("arch=wrn40_2",), "checkpoint energy_wrn40_2_cifar10 not found"),
        (("ood=[svhn]",), "no OOD set could be evaluated: OOD set svhn not available"),
        (("result_set=unit", "paths.results=/etc/hostname/sub"), "results directory /etc/hostname/sub is not writable"),
    ],
)
def test_bad_input_is_one_clear_line(run_cli, args, expected):
    ood = [] if any(a.startswith("ood") for a in args) else ["ood=[gaussian]"]
    line = _one_error_line(run_cli(*args, *ood, *SMALL))
    assert expected in line


def test_corrupt_checkpoint_is_one_clear_line(run_cli, shared_weights, tmp_path):
    data = bytearray((shared_weights / "odin_densenet10.pth").read_bytes())
    data[5000] ^= 0xFF
    (tmp_path / "odin_densenet10.pth").write_bytes(bytes(data))
    line = _one_error_line(run_cli(f"paths.weights={tmp_path}", "ood=[gaussian]", *SMALL))
    assert "sha256" in line and "corrupt" in line and "verify_sha256" not in line  # no option the CLI lacks


class _NaNDetector(LogitDetector):
    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        s = logits[:, 0].clone()
        s[1] = float("nan")
        return s


def test_nan_scores_are_an_error_not_a_number():
    data = ImageSet("toy", np.zeros((3, 2, 2, 3), np.uint8), None, "toy", 3, np.arange(3), "toy")
    reps = Representations(torch.zeros(3, 4), torch.zeros(3, 2))
    with pytest.raises(OodbenchError, match="1 non-finite scores on toy"):
        score_set(_NaNDetector(), reps, data, ScoringContext(None, torch.device("cpu"), 8), "nan-det")


def test_cache_key_covers_every_input_and_bad_entries_are_rebuilt(tmp_path):
    base = dict(checkpoint="a", data="d", indices="i", n=3, transform="t", layers="l", dtype="float32")
    keys = {cache_key(**base)} | {cache_key(**{**base, k: "changed"}) for k in base}
    assert len(keys) == len(base) + 1
    cache = RepresentationCache(tmp_path)
    calls = []

    def compute() -> Representations:
        calls.append(1)
        return Representations(torch.ones(2, 3), torch.ones(2, 4))

    key = cache_key(**base)
    cache.get_or_compute(key, compute, "x")
    cache.get_or_compute(key, compute, "x")
    assert len(calls) == 1 and cache.hits == 1
    path = cache.path(key)
    path.write_bytes(path.read_bytes()[:50])  # truncated file: detected, rebuilt, never used
    reps = cache.get_or_compute(key, compute, "x")
    assert len(calls) == 2 and torch.equal(reps.logits, torch.ones(2, 3))
    bypass = RepresentationCache(tmp_path, enabled=False)
    bypass.get_or_compute(key, compute, "x")
    assert len(calls) == 3 and bypass.hits == 0  # the switch bypasses the cache


def test_mahalanobis_ensemble_tunes_per_ood_set(run_cli, tmp_path):
    """Lee et al.'s ensemble through the runner: Gaussians on ID train, weights on a per-set validation split."""
    proc = run_cli("detector=mahalanobis_ensemble", "protocol=mahalanobis", "detector.epsilon=0",
                   "protocol.val_n=40", "protocol.ood_holdout=40", "protocol.max_fit=200", "protocol.max_id=100",
                   "protocol.max_ood=100", "protocol.bootstrap=0", "ood=[gaussian]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MahalanobisEnsemble weights for gaussian" in proc.stdout  # logged by the detector itself
    df = _metrics(proc)
    assert df.loc[0, "auroc"] > 0.9 and df.loc[0, "n_ood"] == 100 and "first 40 held out" in df.loc[0, "ood_notes"]
    wrong = run_cli("detector=mahalanobis_ensemble", "ood=[gaussian]", *SMALL)
    assert "(protocol=mahalanobis or mahalanobis_table2" in _one_error_line(wrong)


def test_energy_protocol_averages_seeded_draws():
    from functools import partial

    from oodbench.metrics import compute_all, fpr_at_tpr
    from oodbench.runner.evaluate import _mean_over_draws

    rng = np.random.default_rng(0)
    ids, oods = rng.normal(1, 1, 300), rng.normal(0, 1, 5000)
    got = _mean_over_draws(ids, oods, partial(compute_all), draws=3, size=200, seed=7)
    draw = np.random.default_rng(7)
    picks = [oods[draw.choice(5000, size=200, replace=False)] for _ in range(3)]
    assert got["auroc"] == pytest.approx(np.mean([compute_all(ids, o)["auroc"] for o in picks]))
    assert got["fpr95"] == pytest.approx(np.mean([fpr_at_tpr(ids, o, rule="nearest") for o in picks]))
    assert got["auroc_draw_std"] == pytest.approx(np.std([compute_all(ids, o)["auroc"] for o in picks], ddof=1))
    assert got["fpr95_draw_std"] == pytest.approx(np.std([fpr_at_tpr(ids, o, rule="nearest") for o in picks], ddof=1))
    assert got == _mean_over_draws(ids, oods, partial(compute_all), draws=3, size=200, seed=7)


def test_git_commit_is_dirty_for_code_not_for_stored_results(tmp_path, monkeypatch):
    import subprocess

    from oodbench.runner import provenance

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "row.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    try:
        provenance.git_commit.cache_clear()
        (tmp_path / "results" / "row.csv").write_text("b\n")  # a run stored rows: not dirty code
        assert not provenance.git_commit().endswith("+dirty")
        provenance.git_commit.cache_clear()
        (tmp_path / "code.py").write_text("x = 2\n")
        assert provenance.git_commit().endswith("+dirty")
    finally:
        provenance.git_commit.cache_clear()
