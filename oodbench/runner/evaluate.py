"""Metrics for one (ID, OOD) score pair under the run's protocol, with bootstrap sampling noise."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

from oodbench.detectors.base import Detector
from oodbench.metrics import bootstrap_metrics, compute_all, compute_all_odin, fpr_at_tpr, odin_grid

NOISE_KEYS = ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_error")


def evaluate_pair(id_scores: np.ndarray, ood_scores: np.ndarray, det: Detector, protocol: Mapping[str, Any],
                  detector_name: str, num_classes: int) -> dict[str, Any]:
    """Protocol metrics (fractions) + ``<metric>_std`` from a seeded bootstrap over ID and OOD images.

    ``protocol.metrics = odin`` uses ODIN's threshold-grid definitions (grid bounds from ODIN's code for
    softmax scores at T = 1 / 1000, else the scores' range); ``standard`` the exact ones. The bootstrap
    resamples ID and OOD images independently and recomputes the same definitions.
    """
    p = protocol
    if p["metrics"] == "odin":
        temperature = det.metric_hints().get("softmax_temperature", float("nan"))
        start, end = odin_grid(num_classes, temperature, id_scores, ood_scores)
        metric_fn = partial(compute_all_odin, start=start, end=end)
        definition = f"odin threshold grid [{start:g}, {end:g}), 100000 steps; fpr95_oodpos exact"
    else:
        metric_fn = partial(compute_all, detector=detector_name)
        definition = "exact (ID positive); fpr95_oodpos: OpenOOD's, OOD positive"
    if p.get("draws"):
        out: dict[str, Any] = _mean_over_draws(id_scores, ood_scores, metric_fn, p["draws"], p["draw_size"], p["seed"])
        definition += f"; mean over {p['draws']} seeded draws of {p['draw_size']} OOD images; fpr95 by Energy's rule"
    else:
        out = metric_fn(id_scores, ood_scores)
    out["metric_definition"] = definition
    if p.get("bootstrap"):
        fast = None if p["metrics"] != "odin" else metric_fn  # None = the vectorised exact path
        noise = bootstrap_metrics(id_scores, ood_scores, fast, n_boot=p["bootstrap"], seed=p["seed"])
        out.update({f"{k}_std": noise[k][0] for k in NOISE_KEYS if k in noise})
    return out


def _mean_over_draws(
    id_scores: np.ndarray, ood_scores: np.ndarray, metric_fn: Any, draws: int, size: int, seed: int
) -> dict[str, Any]:
    """The Energy paper's protocol (Liu et al. 2020, official ``test.py``): every ID image vs ``size`` random
    OOD images, metrics averaged over ``draws`` seeded draws; FPR95 as its ``fpr_and_fdr_at_recall`` picks it;
    ``<metric>_draw_std`` = the standard deviation over the draws."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(draws):
        ood = ood_scores[rng.choice(len(ood_scores), size=min(size, len(ood_scores)), replace=False)]
        m = metric_fn(id_scores, ood)
        m["fpr95"] = fpr_at_tpr(id_scores, ood, rule="nearest")
        rows.append(m)
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if not isinstance(rows[0][k], bool)}
    # the spread the paper's own protocol implies: the standard deviation over its draws (ddof = 1)
    out.update({f"{k}_draw_std": float(np.std([r[k] for r in rows], ddof=1)) for k in NOISE_KEYS
                if k in rows[0] and draws > 1})
    return out
