"""Figures of one cell's rows (``figures=true`` on the command line, ``Results.plot`` in the API): per OOD set, the
ID and OOD score histograms and the ROC curve, labelled with the detector and its parameters so the cells of a sweep
tell apart. Needs matplotlib (``pip install oodbench[figures]``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from oodbench.errors import OodbenchError


def _label(row: pd.Series) -> str:
    try:
        params = json.loads(row.detector_params)
    except (TypeError, ValueError):
        params = {}
    shown = ", ".join(f"{k}={v}" for k, v in params.items() if not isinstance(v, (dict, list)))
    return f"{row.detector}" + (f" ({shown})" if shown else "")


def score_figures(rows: pd.DataFrame, scores: dict[str, np.ndarray], out: Path) -> list[Path]:
    """One PNG per ok row: ``<out>/<run>-<ood>.png``; returns their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OodbenchError("figures need matplotlib: pip install 'oodbench[figures]' (or figures=false)") from None
    from sklearn.metrics import roc_curve

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for row in rows[rows.status == "ok"].itertuples():
        s_id, s_ood = scores.get(f"id__{row.ood_dataset}"), scores.get(f"ood__{row.ood_dataset}")
        if s_id is None or s_ood is None:
            continue
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
        bins = np.histogram_bin_edges(np.concatenate([s_id, s_ood]), bins=50)
        ax1.hist(s_id, bins=bins, alpha=0.6, density=True, label=f"ID {row.id_dataset} (n={len(s_id)})")
        ax1.hist(s_ood, bins=bins, alpha=0.6, density=True, label=f"OOD {row.ood_dataset} (n={len(s_ood)})")
        ax1.set_xlabel("score (higher = more in-distribution)")
        ax1.legend(fontsize=7)
        fpr, tpr, _ = roc_curve(np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))], np.r_[s_id, s_ood])
        ax2.plot(fpr, tpr)
        ax2.plot([0, 1], [0, 1], ":", color="grey")
        ax2.set_xlabel("FPR (OOD accepted)")
        ax2.set_ylabel("TPR (ID accepted)")
        ax2.set_title(f"AUROC {100 * row.auroc:.2f}%, FPR95 {100 * row.fpr95:.2f}%", fontsize=8)
        fig.suptitle(f"{_label(row)} — {row.checkpoint}", fontsize=9)
        fig.tight_layout()
        path = out / f"{row.run_name}-{row.ood_dataset}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        path.chmod(0o644)
        paths.append(path)
    return paths
