"""The summary of a sweep: one table for a whole Hydra multirun (written when it ends, by
:class:`oodbench.runner.sweep.SweepSummary`) and the paired comparisons the Python API's ``Results.summary`` prints.

Each job leaves ``metrics.csv`` in its own directory (a skipped, already-finished cell copies its stored rows
there; a failed cell leaves ``failed.csv`` with its message), so the summary covers every cell of the sweep.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oodbench.metrics import compute_all
from oodbench.metrics.joint import joint_replicates, paired_test
from oodbench.store import CorruptRows, read_rows, write_csv

log = logging.getLogger("oodbench")
SHOWN = ["fpr95", "auroc"]
PAIRED_BOOT = 1000


def summarize(sweep_dir: Path) -> pd.DataFrame | None:
    """Collect every job's rows under ``sweep_dir`` and write ``summary.csv`` and ``summary.md`` there."""
    files = sorted(sweep_dir.glob("*/metrics.csv")) + sorted(sweep_dir.glob("*/failed.csv"))
    if not files:
        return None
    frames, damaged = [], []
    for f in files:
        try:
            frames.append(read_rows(f) if f.name == "metrics.csv" else pd.read_csv(f))
        except (CorruptRows, ValueError, OSError) as err:
            damaged.append(f"{f.parent.name}: rows unreadable ({err.args[0] if err.args else err})")
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    write_csv(df, sweep_dir / "summary.csv")
    ok = df[df.status == "ok"].copy()
    lines = [f"# Sweep summary ({len(files)} cells, {int((df.status == 'failed').sum())} failed)", ""]
    if len(ok):
        ok["setting"] = ok.detector + " " + ok.detector_params.map(_short)
        for metric in SHOWN:
            table = ok.pivot_table(index="setting", columns="ood_dataset", values=metric, sort=True) * 100
            table["mean"] = table.mean(axis=1)
            lines += [f"## {metric} (%)", "", *_markdown(table), ""]
        paired, bad_scores = paired_section(sweep_dir, ok)
        lines += paired
        damaged += bad_scores
    for r in df[df.status == "failed"].itertuples():
        lines.append(f"- failed: {r.run_name}: {r.message}")
    for d in damaged:
        log.warning("sweep summary: %s", d)
        lines.append(f"- not paired: {d}")
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return df


def _same_images_key(row: pd.Series) -> str | None:
    """Rows whose scores can be paired: same checkpoint, same ID images, same OOD images (from ``inputs``)."""
    try:
        ident = json.loads(row.inputs)
        return json.dumps([ident["checkpoint"], ident["id"], ident["ood"][row.ood_dataset]], sort_keys=True)
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def _load_scores(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def paired_section(sweep_dir: Path, ok: pd.DataFrame) -> tuple[list[str], list[str]]:
    """:func:`paired_lines` on the scores the sweep's jobs kept (``*/scores.npz``); also returns one line per cell
    whose kept scores are damaged (left out of the pairing, named)."""
    if "inputs" not in ok.columns or ok.run_name.nunique() < 2:
        return [], []
    scores, damaged = {}, []
    for f in sorted(sweep_dir.glob("*/scores.npz")):
        try:
            rows = read_rows(f.with_name("metrics.csv"))
        except (CorruptRows, OSError):
            continue
        if not len(rows):
            continue
        loaded = _load_scores(f)
        if loaded is None:
            damaged.append(f"{rows.run_name.iloc[0]}: per-image scores damaged ({f}); rerun=true recomputes them")
            continue
        scores[str(rows.run_name.iloc[0])] = loaded
    return paired_lines(ok, scores)[0], damaged


def paired_lines(ok: pd.DataFrame, scores: dict[str, dict[str, np.ndarray]]) -> tuple[list[str], list[str]]:
    """Per OOD set, the best cell by AUROC against every other cell scored on the same images: ΔAUROC and ΔFPR95
    (other − best, points) with 95 % paired-bootstrap intervals and p-values (:func:`paired_test` on one
    :func:`joint_replicates` draw per OOD set: each cell's replicates are computed once). ``ok``: rows with a
    ``setting`` label; ``scores``: run name → its ``id__<set>`` / ``ood__<set>`` arrays. Returns (lines, cells not
    paired)."""
    if "inputs" not in ok.columns or ok.run_name.nunique() < 2:
        return [], []
    several_ckpts = ok.checkpoint.nunique() > 1
    label = (lambda r: f"{r.checkpoint} {r.setting}") if several_ckpts else (lambda r: r.setting)
    out, missing = [], sorted(set(ok.run_name) - set(scores))
    for (ood, _key), group in ok.assign(key=ok.apply(_same_images_key, axis=1)).groupby(["ood_dataset", "key"]):
        group = group[group.run_name.isin(scores)].sort_values("auroc", ascending=False)
        if len(group) < 2:
            continue
        pairs, full = {}, {}
        for r in group.itertuples():  # every cell's replicates once, on one shared draw (joint_replicates)
            z = scores[r.run_name]
            pairs[r.run_name] = {ood: (z[f"id__{ood}"], z[f"ood__{ood}"])}
            full[r.run_name] = compute_all(*pairs[r.run_name][ood])
        reps = joint_replicates(pairs, PAIRED_BOOT)
        best = group.iloc[0]
        for r in group.iloc[1:].itertuples():
            a, f = (paired_test(full[r.run_name][m] - full[best.run_name][m],
                                reps[r.run_name][ood][m] - reps[best.run_name][ood][m]) for m in ("auroc", "fpr95"))
            tied = "tied (p ≥ 0.05)" if a["p"] >= 0.05 else "worse"
            out.append(f"| {ood} | {label(best)} | {label(r)} | {100 * a['delta']:+.2f} [{100 * a['lo']:+.2f}, "
                       f"{100 * a['hi']:+.2f}] | {a['p']:.3f} | {100 * f['delta']:+.2f} [{100 * f['lo']:+.2f}, "
                       f"{100 * f['hi']:+.2f}] | {f['p']:.3f} | {tied} |")
    if not out:
        return [], missing
    lines = ["## Paired comparisons against the best cell of each OOD set", "",
             f"Same images for both cells; {PAIRED_BOOT} paired bootstrap resamples (ID and OOD images resampled "
             "identically for both); Δ = other − best, in points, with the 95 % interval; AUROC decides *best*, "
             "and *tied* = the AUROC difference is not significant (p ≥ 0.05).", "",
             "| OOD | best | other | ΔAUROC [95 % CI] | p | ΔFPR95 [95 % CI] | p | AUROC vs best |",
             "|---|---|---|---|---|---|---|---|", *out, ""]
    if missing:
        lines += [f"Not paired (no per-image scores kept; rerun=true recomputes them): {', '.join(missing)}", ""]
    return lines, missing


def _short(params: Any) -> str:
    try:
        d = json.loads(params)
    except (TypeError, ValueError):
        return ""
    return ",".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, dict))


def _markdown(table: pd.DataFrame) -> list[str]:
    cols = [str(c) for c in table.columns]
    rows = [f"| {table.index.name} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    rows += [f"| {i} | " + " | ".join(f"{v:.2f}" for v in r) + " |" for i, r in zip(table.index, table.to_numpy())]
    return rows
