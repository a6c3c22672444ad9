"""How many † flags a *perfect* reproduction would raise on a page, by simulation from our own bootstrap.

A page flags a cell when |ours − published| > 2σ. If our numbers were a perfect reproduction, each cell would still
be flagged with probability ≈ 4.55 %, but the cells are not independent: all cells of one ID set share its images,
the cells of one OOD set share those images, and the five metrics of one cell move together. So the count of chance
flags is far more spread out than Binomial(M, 4.55 %).

The simulation: one joint bootstrap (:func:`~oodbench.metrics.joint.joint_replicates`, ``N_BOOT`` replicates) over
every compared cell whose run kept its per-image scores — one ID draw per ID set, one draw per OOD set, shared by
every run on those images. In replicate r, cell k deviates by e_k = 100·(metric_k(r) − metric_k) plus the paper's
rounding u_k ~ U(−0.05, 0.05), and is flagged when |e_k + u_k| exceeds the page's 2σ for it. A cell without kept
scores (e.g. a mean over sets, or a run made before scores were kept), or whose stored value the exact metric on its
kept scores does not reproduce within ``SAME_METRIC`` points (ODIN's protocol defines AUPR differently), is flagged
with probability 4.55 %, independently. Over the replicates: the mean count and the 95 % quantile — "a perfect
reproduction flags at most K in 95 % of pages". Metrics are the exact ones, also for rows scored under ODIN's
threshold-grid protocol, wherever the exact metric reproduces the stored value within ``SAME_METRIC``.

The result goes to ``results/significance/<spec>.chance.csv`` with a digest of the compared cells; the page uses it
only while the digest matches (``make tables`` refreshes it when stale, and keeps it on a fresh clone).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from oodbench.metrics.core import compute_all
from oodbench.metrics.joint import joint_replicates
from oodbench.metrics.significance import chance_flags, simulate_flags
from oodbench.store import stable_hash, write_csv
from oodbench.tables import layout
from oodbench.tables.compare import ROUNDING
from oodbench.tables.significance import SIG_DIR, kept_pair

N_BOOT, SEED = 1000, 0
SAME_METRIC = 0.5  # points: a stored value the exact metric on the kept scores does not reproduce is not simulated


def path(results: Path, spec: str) -> Path:
    return Path(results) / SIG_DIR / f"{spec}.chance.csv"


def digest(cmp: pd.DataFrame) -> str:
    cols = [c for c in ("run_name", "inputs_id", "ood_dataset", "our_metric", "ours", "published", "noise")
            if c in cmp.columns]
    return stable_hash(sorted(json.dumps([str(v) for v in r]) for r in cmp[cols].to_numpy()), 16)


def simulate(cmp: pd.DataFrame, rows: pd.DataFrame, cache: Path | None) -> dict[str, float]:
    """The chance-flag count of a page's compared cells (``cmp``: the page's long records with a published value)."""
    rng = np.random.default_rng(SEED)
    idents = {(r.run_name, r.inputs_id): json.loads(r.inputs) for r in rows.itertuples()
              if "inputs" in rows.columns and isinstance(r.inputs, str)} if not rows.empty else {}
    pairs: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    id_sets: dict[str, str] = {}
    usable = []
    for r in cmp.itertuples():
        ident = idents.get((getattr(r, "run_name", None), getattr(r, "inputs_id", None)))
        # simulated only where the exact metric on the kept scores gives the stored value (ODIN's protocol defines
        # AUPR otherwise): such a cell is counted as an independent flag below
        stored = (100 - float(r.ours) if r.complement else float(r.ours)) / 100
        pair = kept_pair(cache, r.run_name, r.inputs_id, r.ood_dataset, r.our_metric, stored,
                         SAME_METRIC / 100) if ident else None
        if pair is None:
            continue
        cell, set_key = f"{r.run_name}|{r.inputs_id}", stable_hash(ident["ood"][r.ood_dataset], 12)
        pairs.setdefault(cell, {})[set_key] = pair
        id_sets[cell] = stable_hash(ident["id"], 12)
        usable.append((cell, set_key, r.our_metric, float(r.noise), pair))
    metrics = sorted({u[2] for u in usable})
    reps = joint_replicates(pairs, N_BOOT, SEED, metrics, id_sets) if usable else {}
    errors = [100 * (reps[cell][set_key][metric] - float(compute_all(*pair)[metric]))
              + rng.uniform(-ROUNDING, ROUNDING, N_BOOT) for cell, set_key, metric, _, pair in usable]
    sim = simulate_flags(errors, [u[3] for u in usable], len(cmp) - len(usable), N_BOOT, rng)
    return {"cells": len(cmp), "simulated": len(usable), **sim, "n_boot": N_BOOT}


def refresh(name: str, df: pd.DataFrame, rows: pd.DataFrame, results: Path, cache: Path | None) -> bool:
    """Recompute ``<spec>.chance.csv`` when missing or stale; True when it was written."""
    cmp = layout.compared(df)
    if cmp.empty or "our_metric" not in cmp.columns:
        return False
    target, tag = path(results, name), digest(cmp)
    if target.is_file() and pd.read_csv(target).digest.iloc[0] == tag:
        return False
    out = simulate(cmp, rows, cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_csv(pd.DataFrame([{"spec": name, "digest": tag, **out}]), target)
    return True


def stored(results: Path, name: str, df: pd.DataFrame) -> dict[str, float] | None:
    """The current simulation of the page, or None (the page then states the independent-cells bound)."""
    cmp = layout.compared(df)
    target = path(results, name)
    if cmp.empty or not target.is_file() or "our_metric" not in cmp.columns:
        return None
    rec = pd.read_csv(target).iloc[0]
    return None if rec.digest != digest(cmp) else {k: rec[k] for k in ("cells", "simulated", "mean", "q95", "n_boot")}


def binomial_text(m: int, why: str) -> str:
    mean, hi = chance_flags(m)
    return (f"A perfect reproduction would flag {mean:.1f} of these {m} cells by chance on average (4.55 % each), at "
            f"most {hi} in 95 % of pages if the cells were independent; they are not (they share their ID and OOD "
            f"images, and a cell's metrics move together), which widens that spread, but {why}.")


def text(sim: dict[str, float] | None, m: int) -> str:
    """The page's chance-flag sentence: simulated, or the independent bound with the reason it is not simulated."""
    if sim is None:
        return binomial_text(m, "no current simulation matches these rows (`make tables` writes one)")
    if not sim["simulated"]:
        return binomial_text(m, "no run of this page kept its per-image scores, so it cannot be simulated (runs "
                                "made before scores were kept; `rerun=true` keeps them)")
    part = (f"all {m} cells simulated" if sim["simulated"] == m else
            f"{int(sim['simulated'])} of {m} cells simulated from kept per-image scores, the other "
            f"{m - int(sim['simulated'])} as independent 4.55 % flags")
    return (f"A perfect reproduction would flag {sim['mean']:.1f} of these {m} cells by chance on average and at most "
            f"{int(sim['q95'])} in 95 % of pages, by simulation from our own joint bootstrap ({int(sim['n_boot'])} "
            f"draws sharing the ID and OOD images across cells, so correlated cells flag together; {part}; "
            f"`results/{SIG_DIR}/<page>.chance.csv`). Independent cells would give at most "
            f"{chance_flags(m)[1]}.")
