"""Which cells of an our-only grid column are best *beyond noise*: paired tests from per-image scores.

For a grid block with ``significance: true`` (e.g. the post-hoc table), per checkpoint, metric and column (each OOD
set and the mean over sets), the best cell by value is tested against every other cell of the column:

- **paired** where both cells' per-image scores are in the cache (``<cache>/scores/<run>-<inputs>.npz``, kept by
  every run) and reproduce the stored row's AUROC (:func:`kept_pair`): one joint bootstrap draw
  (:func:`~oodbench.metrics.joint.joint_replicates`, ``N_BOOT`` replicates, the same ID and OOD resamples for every
  detector of the checkpoint), Δ* = other − best per replicate; the mean column uses the replicates of the mean over
  sets;
- **unpaired** otherwise (a cell whose scores are not kept, e.g. ODIN's input-perturbed runs made elsewhere): a
  z-test on the stored bootstrap σ's, σ_Δ² = σ_a² + σ_b² — conservative when the two cells' errors are positively
  correlated, as two detectors on the same images are; the mean column's σ is the mean of the sets' σ's (the
  perfectly-correlated bound).

Holm's step-down correction runs over the column's comparisons (family-wise α = ``ALPHA``). A column's best is
*significantly best* when every comparison stays significant; otherwise it is *tied* with each cell whose difference
does not. The records are written to ``results/significance/<spec>.csv`` with a digest of the rows they were
computed from; :func:`marks` uses them only while that digest still matches the stored rows, so a recomputed cell
can never keep a stale mark. ``make tables`` refreshes a stale or missing file (it needs the cache's scores for the
paired tests) and keeps a current one, so a fresh clone renders the same page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oodbench.metrics.core import compute_all
from oodbench.metrics.joint import joint_replicates, mean_over_sets
from oodbench.metrics.significance import column_tests
from oodbench.store import Store, stable_hash, write_csv
from oodbench.tables import layout

N_BOOT, SEED, ALPHA = 1000, 0, 0.05
SAME = 1e-6  # a kept score file is paired only if it reproduces the row's AUROC (stored to 6 decimals) to this
SIG_DIR = "significance"
MEAN = "mean"


def path(results: Path, spec: str) -> Path:
    return Path(results) / SIG_DIR / f"{spec}.csv"


def kept_pair(cache: Path | None, run_name: object, inputs_id: object, ood: str, metric: str, stored: float,
              tol: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The (ID, OOD) scores run ``run_name`` kept for set ``ood`` (:meth:`~oodbench.store.Store.kept_scores`), or
    None when absent, damaged, or when the exact ``metric`` on them is more than ``tol`` from the ``stored`` value
    (fraction): a file left under the same run and inputs by other code or another machine is never paired with this
    row."""
    if cache is None or not isinstance(run_name, str):
        return None
    z = Store(Path(), Path(cache)).kept_scores(run_name, str(inputs_id))
    if z is None or f"id__{ood}" not in z or f"ood__{ood}" not in z:
        return None
    pair = (z[f"id__{ood}"], z[f"ood__{ood}"])
    return pair if abs(float(compute_all(*pair)[metric]) - stored) <= tol else None


def digest(rows: pd.DataFrame) -> str:
    """What a checkpoint's records were computed from: each ok row's run, inputs and metric values."""
    cols = [c for c in ("run_name", "inputs_id", "ood_dataset", "fpr95", "auroc", "fpr95_std", "auroc_std")
            if c in rows.columns]
    return stable_hash(sorted(json.dumps([str(v) for v in r], sort_keys=True) for r in rows[cols].to_numpy()), 16)


def _sets_key(row: Any) -> str:
    """Cells with equal keys were scored on the same ID images and the same image of each OOD set."""
    ident = json.loads(row.inputs)
    return json.dumps([ident["checkpoint"], ident["id"], ident["ood"]], sort_keys=True)


def _replicates(rows: pd.DataFrame, dets: list[str], sets: list[str], cache: Path | None,
                metrics: list[str]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Joint replicates of every detector whose scores of all ``sets`` are kept and scored on shared images."""
    pairs, keys = {}, {}
    for det in dets:
        found = [layout.find(rows, detector=det, ood_dataset=s) for s in sets]
        kept = [kept_pair(cache, r.run_name, r.inputs_id, s, "auroc", float(r.auroc), SAME) if r is not None
                else None for r, s in zip(found, sets)]
        if any(k is None for k in kept):
            continue
        pairs[det] = dict(zip(sets, kept))  # type: ignore[arg-type]
        keys[det] = _sets_key(found[0])
    if not keys:
        return {}
    common = max(set(keys.values()), key=list(keys.values()).count)  # detectors scored on other images: unpaired
    keep = [d for d in keys if keys[d] == common]
    return joint_replicates({d: pairs[d] for d in keep}, N_BOOT, SEED, metrics)


def checkpoint_records(rows: pd.DataFrame, ckpt: str, dets: list[str], sets: list[str],
                       metrics: list[tuple[str, bool]], cache: Path | None,
                       means: list[tuple[str, list[str]]] | None = None) -> list[dict[str, Any]]:
    """The tests of one checkpoint's grid: per metric (name, lower is better) and column — each of ``sets``, then each
    mean column ``(name, its sets)`` of ``means`` (default one ``mean`` over ``sets``)."""
    means = [(MEAN, list(sets))] if means is None else means
    mean_sets = dict(means)
    ok = rows[(rows.checkpoint == ckpt) & (rows.status == "ok") & rows.detector.isin(dets)]
    dets = [d for d in dets if (ok.detector == d).any()]
    if len(dets) < 2:
        return []
    reps = _replicates(ok, dets, sets, cache, [m for m, _ in metrics])
    tag = digest(ok)
    out = []
    for metric, lower in metrics:
        for col in [*sets, *mean_sets]:
            cols = mean_sets[col] if col in mean_sets else [col]
            value, sd = {}, {}
            for d in dets:
                found = [layout.find(ok, detector=d, ood_dataset=s) for s in cols]
                if all(r is not None for r in found):
                    value[d] = float(np.mean([float(r[metric]) for r in found]))
                    stds = [r.get(f"{metric}_std") for r in found]
                    sd[d] = None if any(s is None or pd.isna(s) for s in stds) else float(np.mean(stds))
            if len(value) < 2:
                continue
            cols_reps = {d: mean_over_sets(reps[d], cols, metric) for d in value if d in reps}
            best, tests = column_tests(value, sd, cols_reps, lower, ALPHA)
            base = {"checkpoint": ckpt, "metric": metric, "column": col, "best": best, "digest": tag, "n_boot": N_BOOT}
            out.append({**base, "detector": best, "value": value[best], "delta": 0.0, "p": None,
                        "significant": None, "test": "best"})
            out += [{**base, "detector": t["detector"], "value": value[t["detector"]], "delta": t["delta"],
                     "p": t["p"], "significant": t["significant"], "test": t["test"]} for t in tests]
    return out


def blocks(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in spec["blocks"] if b["kind"] == "grid" and b.get("significance")]


def _metrics(block: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(m["ours"], bool(m.get("lower_is_better"))) for m in block["metrics"] if not m.get("complement")]


def _detectors(block: dict[str, Any], rows: pd.DataFrame) -> list[str]:
    dets = list(block["detectors"])
    if block.get("more_detectors") and not rows.empty:
        dets += sorted(set(rows.detector) - set(dets))
    return dets


def refresh(name: str, spec: dict[str, Any], rows: pd.DataFrame, results: Path, cache: Path | None) -> str | None:
    """Recompute the records of every checkpoint whose stored records are missing or stale; write them. Returns a
    line for the log (None when the spec has no significance grid)."""
    grids = blocks(spec)
    if not grids:
        return None
    target = path(results, name)
    stored = pd.read_csv(target) if target.is_file() else pd.DataFrame()
    recs, kept, redone = [], 0, 0
    for block in grids:
        dets = _detectors(block, rows)
        for ckpt in block["checkpoints"]:
            ok = rows[(rows.checkpoint == ckpt) & (rows.status == "ok") & rows.detector.isin(dets)] \
                if not rows.empty else rows
            old = stored[stored.checkpoint == ckpt] if not stored.empty else stored
            if not old.empty and not ok.empty and set(old.digest) == {digest(ok)}:
                recs += old.to_dict("records")
                kept += 1
            elif not ok.empty:
                sets, means = layout.block_columns(block, rows[rows.checkpoint == ckpt])  # the columns the grid shows
                recs += checkpoint_records(rows, ckpt, dets, sets, _metrics(block), cache,
                                           [(n, ms) for n, _, ms in means])
                redone += 1
    if redone:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_csv(pd.DataFrame(recs), target)
    return f"significance {name}: {redone} checkpoints tested, {kept} kept ({target})"


def marks(results: Path, spec: str, block: dict[str, Any], rows: pd.DataFrame, ckpt: str
          ) -> dict[tuple[str, str, str], str] | None:
    """``{(metric, column, detector): "best" | "tied" | ""}`` for one checkpoint of a grid ``block``, or None when no
    records match its current rows — every detector the grid shows, as :func:`refresh` digests them (the page then
    says so and bolds by value)."""
    target = path(results, spec)
    if not target.is_file() or rows.empty:
        return None
    stored = pd.read_csv(target)
    mine = stored[stored.checkpoint == ckpt]
    ok = rows[(rows.checkpoint == ckpt) & (rows.status == "ok") & rows.detector.isin(_detectors(block, rows))]
    if mine.empty or set(mine.digest) != {digest(ok)}:
        return None
    out = {}
    for (metric, col), g in mine.groupby(["metric", "column"]):
        others = g[g.test != "best"]
        alone = bool(others.significant.astype(bool).all())
        for r in g.itertuples():
            if r.test == "best":
                out[metric, col, r.detector] = "best" if alone else "tied"
            else:
                out[metric, col, r.detector] = "" if bool(r.significant) else "tied"
    return out


def counts(results: Path, spec: str) -> dict[str, int]:
    """How many comparisons were paired and unpaired (for the page's sentence)."""
    target = path(results, spec)
    if not target.is_file():
        return {}
    tests = pd.read_csv(target).test
    return {k: int((tests == k).sum()) for k in ("paired", "unpaired")}


def sentence(results: Path, spec: str, current: bool) -> str:
    """What the bold means under one checkpoint's heading."""
    if not current:
        return (f"Bold: best value of each column; not tested for significance (no current "
                f"`results/{SIG_DIR}/{spec}.csv` for these rows: `make tables` with the runs' per-image scores in the "
                "cache writes it).")
    n = counts(results, spec)
    return (f"**Bold**: significantly best in its column (every other cell significantly worse after Holm's correction "
            f"over the column, α = {ALPHA}); *italics*: tied for best (the best and every cell not significantly "
            f"worse). Paired bootstrap on the same images ({N_BOOT} joint resamples) where both runs' per-image scores "
            f"are kept, else a z-test on the stored σ's; {n.get('paired', 0)} of {sum(n.values())} comparisons on "
            f"this page are paired (`results/{SIG_DIR}/{spec}.csv`).")
