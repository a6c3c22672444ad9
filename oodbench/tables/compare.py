"""Join stored run rows with published numbers: ours, published, Δ, n and a noise flag per cell.

A cell is flagged when |Δ| exceeds twice the combined sampling noise: our bootstrap standard deviation
(resampling ID and OOD images) and the published value's rounding to 0.1 points.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from oodbench.errors import OodbenchError

ROUNDING = 0.05  # published values are printed to 0.1 points
METRIC_COLUMNS = ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_error")


def load_runs(runs_dir: Path) -> pd.DataFrame:
    """Every stored row of an experiment (``results/runs/<experiment>/*.csv``), in a stable order."""
    files = sorted(Path(runs_dir).glob("*.csv"))
    if not files:
        return pd.DataFrame()
    return pd.concat([read_run_csv(f) for f in files], ignore_index=True)


def read_run_csv(path: Path) -> pd.DataFrame:
    """One stored run file, checked: parseable, with its identifying columns and numeric metrics; otherwise one
    :class:`OodbenchError` naming the file and what to do."""
    fix = "delete it (or restore it with git checkout) and rerun its cell to store it again"
    try:
        df = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise OodbenchError(f"stored run {path} is unreadable ({str(err).splitlines()[0][:80]}); {fix}") from None
    missing = [c for c in ("status", "detector", "ood_dataset") if c not in df.columns]
    if missing:
        raise OodbenchError(f"stored run {path} lacks the columns {missing}: not a result file; {fix}")
    ok = df[df.status == "ok"]
    for col in [c for c in METRIC_COLUMNS if c in df.columns]:
        if pd.to_numeric(ok[col], errors="coerce").isna().any():
            raise OodbenchError(f"stored run {path} has a missing or non-numeric {col} on an ok row; {fix}")
    return df


def cell(ours: float | None, published: float | None, std: float | None) -> dict[str, object]:
    """One comparison cell, all in percentage points."""
    if ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return {"ours": None, "published": published, "delta": None, "noise": None, "flag": ""}
    if published is None or (isinstance(published, float) and math.isnan(published)):
        return {"ours": ours, "published": None, "delta": None, "noise": None, "flag": ""}
    noise = 2 * math.hypot(std or 0.0, ROUNDING)
    delta = ours - published
    return {"ours": ours, "published": published, "delta": delta, "noise": noise,
            "flag": "†" if abs(delta) > noise else ""}


def fmt_cell(c: dict[str, object]) -> str:
    """``37.5 / 34.7 (+2.8)``; ``†`` when outside the noise; ``—`` where a side is missing."""
    ours, pub = c["ours"], c["published"]
    if ours is None:
        return "—" if pub is None else f"— / {pub:.1f}"
    if pub is None:
        return f"{ours:.1f} / —"
    return f"{ours:.1f} / {pub:.1f} ({c['delta']:+.1f}){c['flag']}"
