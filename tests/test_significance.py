"""Joint bootstrap, significance marks in a grid and the chance-flag simulation, on small toy scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oodbench.errors import OodbenchError
from oodbench.metrics import bootstrap_metrics, compute_all
from oodbench.metrics.core import group_counts, metrics_from_group_counts
from oodbench.metrics.joint import joint_replicates, mean_over_sets, paired_test
from oodbench.tables import chance, layout, significance

RNG = np.random.default_rng(0)
IDS, ISUN, LSUN = RNG.normal(1.0, 1.0, 300), RNG.normal(0.0, 1.0, 400), RNG.normal(0.3, 1.0, 350)


def test_metric_subset_equals_the_full_computation() -> None:
    values, gid, good = group_counts(IDS, ISUN)
    cnt_id, cnt_ood = np.bincount(gid, minlength=values.size), np.bincount(good, minlength=values.size)
    full = metrics_from_group_counts(cnt_id, cnt_ood)
    some = metrics_from_group_counts(cnt_id, cnt_ood, keys=("auroc", "fpr95"))
    assert list(some) == ["fpr95", "auroc"] and all(some[k] == full[k] for k in some)


def test_joint_replicates_share_the_draws() -> None:
    pairs = {"a": {"isun": (IDS, ISUN), "lsun": (IDS, LSUN)}, "b": {"isun": (IDS, ISUN)}}
    reps = joint_replicates(pairs, n_boot=300, metrics=("auroc", "fpr95", "aupr_in"))
    assert np.array_equal(reps["a"]["isun"]["auroc"], reps["b"]["isun"]["auroc"])  # same scores, same draws
    assert not np.array_equal(reps["a"]["isun"]["auroc"], reps["a"]["lsun"]["auroc"])
    # the replicates are the bootstrap distribution: their σ is the per-cell bootstrap σ (within MC error)
    sigma = bootstrap_metrics(IDS, ISUN, n_boot=300)["auroc"][0]
    assert reps["a"]["isun"]["auroc"].std(ddof=1) == pytest.approx(sigma, rel=0.2)
    # the two sets share the ID draw: their AUROC replicates are positively correlated
    assert np.corrcoef(reps["a"]["isun"]["auroc"], reps["a"]["lsun"]["auroc"])[0, 1] > 0.2
    mean = mean_over_sets(reps["a"], ["isun", "lsun"], "auroc")
    assert np.allclose(mean, (reps["a"]["isun"]["auroc"] + reps["a"]["lsun"]["auroc"]) / 2)
    # another ID set is drawn independently (its own stream)
    other = joint_replicates({"a": {"isun": (IDS, ISUN)}, "c": {"isun": (IDS, ISUN)}}, 300, id_sets={"c": "other"})
    assert abs(np.corrcoef(other["a"]["isun"]["auroc"], other["c"]["isun"]["auroc"])[0, 1]) < 0.9


def test_joint_replicates_bad_input() -> None:
    with pytest.raises(OodbenchError, match="same ID images for every cell: sizes 300 and 299"):
        joint_replicates({"a": {"isun": (IDS, ISUN)}, "b": {"isun": (IDS[:-1], ISUN)}})
    with pytest.raises(OodbenchError, match="same images of isun for every cell: sizes 400 and 399"):
        joint_replicates({"a": {"isun": (IDS, ISUN)}, "b": {"isun": (IDS, ISUN[:-1])}})
    with pytest.raises(OodbenchError, match="positive number of bootstrap replicates"):
        joint_replicates({"a": {"isun": (IDS, ISUN)}}, n_boot=0)


def test_paired_test_p_value_and_interval() -> None:
    assert paired_test(0.0, np.zeros(99)) == {"delta": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0}
    far = paired_test(0.1, np.full(99, 0.1))
    assert far["p"] == pytest.approx(2 / 100) and far["lo"] == far["hi"] == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------- grid marks

def _rows_and_scores(cache: Path, detectors: dict[str, np.ndarray], keep: set[str]) -> pd.DataFrame:
    """One checkpoint, detectors with these ID scores (same OOD scores); scores kept for ``keep`` only."""
    inputs = json.dumps({"checkpoint": "ab", "id": {"n": IDS.size}, "ood": {"isun": {"n": ISUN.size},
                                                                          "lsun_resize": {"n": LSUN.size}}})
    rows = []
    for det, ids in detectors.items():
        run, key = f"cifar10-ck-{det}", f"in{det}"
        scores = {}
        for s, ood in (("isun", ISUN), ("lsun_resize", LSUN)):
            scores[f"id__{s}"], scores[f"ood__{s}"] = ids, ood
            m = compute_all(ids, ood)
            sd = bootstrap_metrics(ids, ood, n_boot=100)
            rows.append({"checkpoint": "ck", "detector": det, "ood_dataset": s, "status": "ok", "run_name": run,
                         "inputs_id": key, "inputs": inputs, "fpr95": m["fpr95"], "auroc": m["auroc"],
                         "fpr95_std": sd["fpr95"][0], "auroc_std": sd["auroc"][0], "n_id": IDS.size,
                         "n_ood": ood.size})
        if det in keep:
            (cache / "scores").mkdir(parents=True, exist_ok=True)
            np.savez(cache / "scores" / f"{run}-{key}.npz", **scores)
    return pd.DataFrame(rows)


TOY = {"a": IDS + 1.0, "b": IDS, "c": IDS + 1.0 + RNG.normal(0.0, 0.02, IDS.size)}  # c: a noisy copy of a
BLOCK = {"kind": "grid", "significance": True, "checkpoints": ["ck"], "detectors": ["a", "b", "c"],
         "metrics": [{"ours": "fpr95", "lower_is_better": True}, {"ours": "auroc"}]}


def test_grid_marks_significantly_best_tied_and_stale(tmp_path: Path) -> None:
    cache, results = tmp_path / "cache", tmp_path / "results"
    rows = _rows_and_scores(cache, TOY, keep={"a", "b", "c"})
    spec = {"blocks": [BLOCK]}
    assert "1 checkpoints tested, 0 kept" in significance.refresh("toy", spec, rows, results, cache)
    marks = significance.marks(results, "toy", BLOCK, rows, "ck")
    # a and its noisy copy c: tied for best; b (ID scores 1.0 lower) far worse
    assert marks["auroc", "isun", "a"] == "tied" and marks["auroc", "isun", "c"] == "tied"
    assert marks["auroc", "isun", "b"] == "" and marks["auroc", "mean", "b"] == ""
    recs = pd.read_csv(significance.path(results, "toy"))
    assert set(recs.test) == {"best", "paired"}
    # without c, a is significantly best: bold alone
    two = rows[rows.detector != "c"]
    significance.refresh("two", {"blocks": [{**BLOCK, "detectors": ["a", "b"]}]}, two, results, cache)
    two_block = {**BLOCK, "detectors": ["a", "b"]}
    assert significance.marks(results, "two", two_block, two, "ck")["auroc", "isun", "a"] == "best"
    # a detector the grid now also shows was never tested: the records are not current for it
    assert significance.marks(results, "two", BLOCK, rows, "ck") is None
    # kept when current (no cache needed), ignored once a row changes
    assert "0 checkpoints tested, 1 kept" in significance.refresh("toy", spec, rows, results, None)
    changed = rows.assign(auroc=np.where(rows.detector == "b", rows.auroc + 0.01, rows.auroc))
    assert significance.marks(results, "toy", BLOCK, changed, "ck") is None


def test_grid_marks_fall_back_to_an_unpaired_test_without_scores(tmp_path: Path) -> None:
    cache, results = tmp_path / "cache", tmp_path / "results"
    rows = _rows_and_scores(cache, TOY, keep={"a"})
    significance.refresh("toy", {"blocks": [BLOCK]}, rows, results, cache)
    recs = pd.read_csv(significance.path(results, "toy"))
    assert set(recs.test) == {"best", "unpaired"}
    marks = significance.marks(results, "toy", BLOCK, rows, "ck")
    assert marks["auroc", "isun", "b"] == "" and marks["auroc", "isun", "c"] == "tied"
    assert "comparisons on this page are paired" in significance.sentence(results, "toy", True)
    # a kept file that does not reproduce its row (other code or machine, same run name and inputs) is not paired
    rows = _rows_and_scores(cache, TOY, keep={"a", "b", "c"})
    np.savez(cache / "scores" / "cifar10-ck-b-inb.npz", **{f"{k}__{s}": v[::-1] + 0.5 * (k == "id") for s, v0 in
                                                           (("isun", ISUN), ("lsun_resize", LSUN))
                                                           for k, v in (("id", IDS), ("ood", v0))})
    significance.path(results, "toy").unlink()
    significance.refresh("toy", {"blocks": [BLOCK]}, rows, results, cache)
    recs = pd.read_csv(significance.path(results, "toy")).set_index(["metric", "column", "detector"])
    assert recs.loc[("auroc", "isun", "b"), "test"] == "unpaired"
    assert {recs.loc[("auroc", "isun", d), "test"] for d in ("a", "c")} == {"best", "paired"}
    assert "not tested for significance" in significance.sentence(results, "toy", False)


def test_grid_renders_bold_and_italics() -> None:
    runs = pd.DataFrame([{"checkpoint": "ck", "detector": d, "ood_dataset": "isun", "status": "ok", "auroc": v,
                          "auroc_std": 0.01, "n_id": 1, "n_ood": 1} for d, v in (("a", 0.9), ("b", 0.8))])
    rows = [("a", "ck", "a"), ("b", "ck", "b")]
    md, _ = layout.grid(runs, rows, ["isun"], "auroc", marks={"ck": {("isun", "a"): "tied", ("isun", "b"): "tied"}})
    assert md[0][1] == "*90.0*" and md[1][1] == "*80.0*"
    md, _ = layout.grid(runs, rows, ["isun"], "auroc")
    assert md[0][1] == "**90.0**" and md[1][1] == "80.0"



def test_grid_named_mean_columns_are_tested_and_rendered(tmp_path: Path) -> None:
    """``mean_columns``: e.g. a far-OOD and a near-OOD mean, each with its own significance marks."""
    cache, results = tmp_path / "cache", tmp_path / "results"
    rows = _rows_and_scores(cache, TOY, keep={"a", "b", "c"})
    block = {**BLOCK, "mean_columns": [{"name": "mean_far", "label": "far mean", "sets": ["isun"]},
                                       {"name": "mean_near", "label": "near mean", "sets": ["lsun_resize", "cifar100"]},
                                       {"name": "unused", "sets": ["textures"]}]}
    significance.refresh("named", {"blocks": [block]}, rows, results, cache)
    recs = pd.read_csv(significance.path(results, "named"))
    assert set(recs.column) == {"isun", "lsun_resize", "mean_far", "mean_near"}  # no column without a set shown
    far = recs[(recs.column == "mean_far") & (recs.metric == "auroc")].set_index("detector")
    one = recs[(recs.column == "isun") & (recs.metric == "auroc")].set_index("detector")
    assert np.allclose(far.value, one.value.loc[far.index]) and set(far.test) == {"best", "paired"}
    marks = significance.marks(results, "named", block, rows, "ck")
    assert marks["auroc", "mean_near", "a"] == "tied" and marks["auroc", "mean_near", "b"] == ""
    sets, means = layout.block_columns(block, rows)
    assert sets == ["isun", "lsun_resize"] and [(n, label) for n, label, _ in means] == [
        ("mean_far", "far mean"), ("mean_near", "near mean")]
    md, recs = layout.grid(rows, [("a", "ck", "a")], sets, "auroc", means=[(n, ms) for n, _, ms in means])
    lsun = float(rows[(rows.detector == "a") & (rows.ood_dataset == "lsun_resize")].auroc.iloc[0])
    assert md[0][-2] == f"{100 * lsun:.1f}" and {r["ood"] for r in recs} == {"isun", "lsun_resize", "mean_far",
                                                                             "mean_near"}


def test_grid_mean_covers_the_sets_each_checkpoint_has() -> None:
    """A near-OOD mean over CIFAR-100 for a CIFAR-10 network and CIFAR-10 for a CIFAR-100 one, in one table."""
    vals = {("c10", "cifar100"): 0.8, ("c10", "tin"): 0.9, ("c100", "cifar10"): 0.7, ("c100", "tin"): 0.6}
    runs = pd.DataFrame([{"checkpoint": c, "detector": "d", "ood_dataset": s, "status": "ok", "auroc": v,
                          "auroc_std": 0.01, "n_id": 1, "n_ood": 1} for (c, s), v in vals.items()])
    block = {"sets": ["cifar100", "cifar10", "tin"], "mean_columns": [{"name": "near", "sets": ["cifar100", "cifar10",
                                                                                                   "tin"]}]}
    sets, means = layout.block_columns(block, runs)
    assert sets == ["cifar100", "cifar10", "tin"] and means == [("near", "near", sets)]
    md, _ = layout.grid(runs, [("a", "c10", "d"), ("b", "c100", "d")], sets, "auroc", means=[("near", sets)])
    assert md[0][1:] == ["80.0", "—", "90.0", "85.0", "ok"]  # one row per checkpoint: nothing to bold
    assert md[1][1:] == ["—", "70.0", "60.0", "65.0", "ok"]
    # a checkpoint missing one of its own sets for this detector: no mean, the status says so
    runs2 = pd.concat([runs, runs.iloc[:1].assign(detector="e")])
    md, _ = layout.grid(runs2, [("e", "c10", "e")], sets, "auroc", means=[("near", sets)])
    assert md[0][4] == "—" and md[0][-1] == "1 of 2 sets"

# ---------------------------------------------------------------------------------------------- chance flags

def _page(cache: Path, n_cells: int, same: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n_cells`` compared cells (AUROC), each published at our value rounded; ``same``: all cells one run on the
    same images (perfectly correlated), else each its own ID and OOD images (independent)."""
    cmp, rows = [], []
    (cache / "scores").mkdir(parents=True, exist_ok=True)
    for k in range(n_cells):
        s = "isun" if same else f"set{k}"
        ood = ISUN if same else np.random.default_rng(k).normal(0.0, 1.0, 400)
        ids = IDS if same else np.random.default_rng(100 + k).normal(1.0, 1.0, 300)
        run, key = f"run{0 if same else k}", f"in{0 if same else k}"
        np.savez(cache / "scores" / f"{run}-{key}.npz", **{f"id__{s}": ids, f"ood__{s}": ood})
        ours = 100 * compute_all(ids, ood)["auroc"]
        sd = 100 * bootstrap_metrics(ids, ood, n_boot=200)["auroc"][0]
        c = {"ours": ours, "published": round(ours, 1), "delta": ours - round(ours, 1), "flag": ""}
        cmp.append({**c, "noise": 2 * np.hypot(sd, 0.05), "status": "ok", "metric": "auroc", "run_name": run,
                    "inputs_id": key, "ood_dataset": s, "our_metric": "auroc", "complement": False})
        rows.append({"run_name": run, "inputs_id": key,
                     "inputs": json.dumps({"id": {"k": 0 if same else k}, "ood": {s: {"k": 0 if same else k}}})})
    return pd.DataFrame(cmp), pd.DataFrame(rows).drop_duplicates()


def test_chance_simulation_widens_with_correlation(tmp_path: Path) -> None:
    cmp, rows = _page(tmp_path / "same", 20, same=True)
    sim = chance.simulate(cmp, rows, tmp_path / "same")
    assert sim["simulated"] == 20
    assert sim["q95"] in (0, 20)  # 20 copies of one cell: flagged together or not at all
    free, free_rows = _page(tmp_path / "free", 20, same=False)
    indep = chance.simulate(free, free_rows, tmp_path / "free")
    assert 0.2 < indep["mean"] < 2.5 and indep["q95"] <= 5  # ~4.55 % of 20, spread near Binomial(20, 4.55 %)
    # no kept scores: every cell an independent 4.55 % flag
    none = chance.simulate(free, free_rows, tmp_path / "nowhere")
    assert none["simulated"] == 0 and 0.5 < none["mean"] < 1.4
    assert "cannot be simulated" in chance.text(none, 20) and "by simulation" in chance.text(sim, 20)


def test_chance_file_is_used_only_while_current(tmp_path: Path) -> None:
    cmp, rows = _page(tmp_path / "cache", 3, same=False)
    results = tmp_path / "results"
    assert chance.refresh("toy", cmp, rows, results, tmp_path / "cache")
    assert not chance.refresh("toy", cmp, rows, results, None)  # current: kept, no cache needed
    assert chance.stored(results, "toy", cmp)["simulated"] == 3
    assert chance.stored(results, "toy", cmp.assign(ours=cmp.ours + 1)) is None
