"""ODIN's grid-based metrics (Liang et al., ICLR 2018, official ``code/calMetric.py``), vectorised.

The official script sweeps thresholds ``delta`` over ``np.arange(start, end, (end - start) / 100000)``
and, per ``delta``, uses *rates* (counts divided by each set's own size):

* FPR at 95 % TPR: mean of ``P(ood > delta)`` over the grid deltas whose ``TPR = P(id >= delta)`` lies
  in ``[0.9495, 0.9505]`` (so it averages FPRs at TPR 94.95 %..95.05 %, weighted by grid density).
* Detection error: ``min(1, min_delta 0.5 P(id < delta) + 0.5 P(ood > delta))``.
* AUROC: walking delta upward with ``tpr = P(id >= delta)``, ``fpr = P(ood > delta)``, ``fpr_prev = 1``:
  ``sum (fpr_prev - fpr) * tpr`` plus the final ``fpr * tpr`` (left Riemann sum, no trapezoid).
* AUPR-in: upward, ``tp = P(id >= delta)``, ``fp = P(ood >= delta)``, deltas with ``tp + fp = 0`` skipped;
  ``precision = tp / (tp + fp)`` (of rates, i.e. as if the two sets had equal size), ``recall = tp``,
  ``recall_prev = 1``: ``sum (recall_prev - recall) * precision`` plus the final ``recall * precision``.
* AUPR-out: the same with roles swapped, walking ``np.arange(end, start, -gap)`` downward with
  ``tp = P(ood < delta)``, ``fp = P(id < delta)``, stopping at the first delta where ``tp + fp = 0``.

Note the strict/non-strict mix (``id >= delta`` but ``ood > delta``) is the script's, kept on purpose.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from oodbench.errors import OodbenchError
from oodbench.metrics.core import _check_pair, fpr95_oodpos, fpr_at_tpr

ODIN_STEPS = 100_000
TPR_WINDOW = (0.9495, 0.9505)
# (num_classes, temperature) -> (start, end), as hard-coded in calMetric.py: T=1 is the MSP baseline,
# T=1000 is ODIN (softmax at temperature 1000 after input perturbation).
ODIN_GRIDS: dict[tuple[int, float], tuple[float, float]] = {
    (10, 1.0): (0.1, 1.0),
    (100, 1.0): (0.01, 1.0),
    (10, 1000.0): (0.1, 0.12),
    (100, 1000.0): (0.01, 0.0104),
}


def odin_grid(num_classes: int, temperature: float, id_scores: ArrayLike | None = None,
              ood_scores: ArrayLike | None = None) -> tuple[float, float]:
    """``(start, end)`` of ODIN's threshold grid: the script's constants for CIFAR-10/100 at T=1 or
    T=1000, otherwise (other detectors / score scales) the min..max of the given scores."""
    key = (int(num_classes), float(temperature))
    if key in ODIN_GRIDS:
        return ODIN_GRIDS[key]
    if id_scores is None or ood_scores is None:
        raise OodbenchError(f"ODIN's script has no threshold grid for num_classes={num_classes}, "
                            f"temperature={temperature}; pass the scores to use their min..max range")
    return score_range_grid(id_scores, ood_scores)


def score_range_grid(id_scores: ArrayLike, ood_scores: ArrayLike) -> tuple[float, float]:
    """Generic grid bounds: min and max over all scores (as later forks of ``calMetric.py`` do)."""
    ids, oods = _check_pair(id_scores, ood_scores)
    lo, hi = float(min(ids.min(), oods.min())), float(max(ids.max(), oods.max()))
    if hi <= lo:
        raise OodbenchError(f"all scores equal {lo}; ODIN's grid metrics are undefined for constant scores")
    return lo, hi


def _grid(start: float, end: float, steps: int, descending: bool = False) -> np.ndarray:
    if not end > start:
        raise OodbenchError(f"ODIN grid needs end > start, got start={start}, end={end}")
    gap = (end - start) / steps
    return np.arange(end, start, -gap) if descending else np.arange(start, end, gap)


def _rates(x_sorted: np.ndarray, delta: np.ndarray, side: str) -> np.ndarray:
    """``P(x < delta)`` for side='left', ``P(x <= delta)`` for side='right'."""
    return np.searchsorted(x_sorted, delta, side) / x_sorted.size


def _riemann(x: np.ndarray, y: np.ndarray) -> float:
    """ODIN's accumulation ``sum (x_prev - x) * y`` with ``x_prev = 1``, then ``+ x_last * y_last``."""
    if x.size == 0:
        return 0.0  # the script would crash (grid entirely outside the scores); no curve, no area
    terms = (np.concatenate([[1.0], x[:-1]]) - x) * y
    return float(np.cumsum(terms)[-1] + x[-1] * y[-1])  # cumsum: same left-to-right order as the loop


def _window_fpr(tpr: np.ndarray, fpr_gt: np.ndarray, ids: np.ndarray, oods: np.ndarray) -> tuple[float, bool]:
    window = (tpr <= TPR_WINDOW[1]) & (tpr >= TPR_WINDOW[0])
    if not window.any():
        return fpr_at_tpr(ids, oods, 0.95), True
    return float(np.mean(fpr_gt[window])), False


def odin_fpr_at_tpr95(id_scores: ArrayLike, ood_scores: ArrayLike, start: float, end: float,
                      steps: int = ODIN_STEPS) -> tuple[float, bool]:
    """ODIN's FPR at 95 % TPR and ``fell_back``: when no grid delta has TPR in [0.9495, 0.9505] (small
    ID sets, coarse grids) the script divides by zero; we return the exact :func:`fpr_at_tpr` instead."""
    ids, oods = _check_pair(id_scores, ood_scores)
    delta = _grid(start, end, steps)
    tpr = 1.0 - _rates(np.sort(ids), delta, "left")
    return _window_fpr(tpr, 1.0 - _rates(np.sort(oods), delta, "right"), ids, oods)


def compute_all_odin(id_scores: ArrayLike, ood_scores: ArrayLike, start: float | None = None,
                     end: float | None = None, *, steps: int = ODIN_STEPS, detector: str | None = None,
                     dataset: str | None = None) -> dict[str, float | bool]:
    """ODIN-protocol metrics on ``np.arange(start, end, (end - start) / steps)``; ``start``/``end``
    default to :func:`score_range_grid`. Keys: ``fpr95``, ``fpr95_fallback``, ``detection_error``,
    ``auroc``, ``aupr_in``, ``aupr_out`` (grid) and ``fpr95_oodpos`` (exact, from :mod:`core`)."""
    ids, oods = _check_pair(id_scores, ood_scores, detector, dataset)
    if start is None or end is None:
        start, end = score_range_grid(ids, oods)
    ids_s, oods_s = np.sort(ids), np.sort(oods)
    up = _grid(start, end, steps)
    id_lt = _rates(ids_s, up, "left")
    ood_lt, ood_le = _rates(oods_s, up, "left"), _rates(oods_s, up, "right")
    tpr, fpr_gt, fpr_ge = 1.0 - id_lt, 1.0 - ood_le, 1.0 - ood_lt  # P(id>=d), P(ood>d), P(ood>=d)

    fpr95, fell_back = _window_fpr(tpr, fpr_gt, ids, oods)
    det = float(min(1.0, np.min((id_lt + fpr_gt) / 2.0)))
    auroc = _riemann(fpr_gt, tpr)
    keep = (tpr + fpr_ge) > 0  # `continue` in the script
    aupr_in = _riemann(tpr[keep], tpr[keep] / (tpr[keep] + fpr_ge[keep]))
    down = _grid(start, end, steps, descending=True)
    tp_out, fp_out = _rates(oods_s, down, "left"), _rates(ids_s, down, "left")  # P(ood<d), P(id<d)
    stop = np.flatnonzero((tp_out + fp_out) == 0)  # `break` in the script
    n_keep = int(stop[0]) if stop.size else down.size
    tp_out, fp_out = tp_out[:n_keep], fp_out[:n_keep]
    aupr_out = _riemann(tp_out, tp_out / (tp_out + fp_out))
    return {"fpr95": fpr95, "fpr95_fallback": fell_back, "detection_error": det, "auroc": auroc,
            "aupr_in": aupr_in, "aupr_out": aupr_out, "fpr95_oodpos": fpr95_oodpos(ids, oods)}
