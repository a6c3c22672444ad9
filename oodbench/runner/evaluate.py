"""Metrics for one (ID, OOD) score pair under the run's protocol, with bootstrap sampling noise."""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig

from oodbench.detectors.base import Detector
from oodbench.metrics import bootstrap_metrics, compute_all, compute_all_odin, odin_grid

NOISE_KEYS = ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_error")


def evaluate_pair(
    id_scores: np.ndarray, ood_scores: np.ndarray, det: Detector, cfg: DictConfig, num_classes: int
) -> dict[str, Any]:
    """Protocol metrics (fractions) + ``<metric>_std`` from a seeded bootstrap over ID and OOD images.

    ``protocol.metrics = odin`` uses ODIN's threshold-grid definitions (grid bounds from ODIN's code for
    softmax scores); ``standard`` the exact ones. The bootstrap always resamples the exact metrics.
    """
    p = cfg.protocol
    name = cfg.detector_name
    if p.metrics == "odin":
        softmax = getattr(det, "softmax_score", False)
        temperature = getattr(det, "temperature", 1.0) if softmax else float("nan")
        start, end = odin_grid(num_classes, temperature, id_scores, ood_scores)
        out: dict[str, Any] = compute_all_odin(id_scores, ood_scores, start, end)
        out["metric_definition"] = f"odin threshold grid [{start:g}, {end:g}), 100000 steps"
    else:
        out = compute_all(id_scores, ood_scores, detector=name)
        out["metric_definition"] = "exact (ID positive); fpr95_oodpos: OpenOOD, OOD positive"
    if p.bootstrap:
        noise = bootstrap_metrics(id_scores, ood_scores, n_boot=p.bootstrap, seed=p.seed)
        out.update({f"{k}_std": noise[k][0] for k in NOISE_KEYS if k in noise})
    return out
