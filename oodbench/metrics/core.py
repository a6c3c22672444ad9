"""Exact OOD-detection metrics computed from two 1-D score arrays.

Convention everywhere: a score is *higher = more in-distribution*; a sample is accepted as ID when
``score >= t`` (ties at the threshold are accepted). Unless a name says otherwise, ID is the positive
class (as in the ODIN, Energy and ASH papers). All values are fractions in [0, 1].

Every metric here is derived from one sort of the pooled scores: for each distinct score value ``v``
(descending) we count ``tp(v) = #{ID >= v}`` and ``fp(v) = #{OOD >= v}``. The same counting code is
run on bootstrap weights by :mod:`oodbench.metrics.bootstrap`, so both always agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from oodbench.errors import OodbenchError

METRIC_KEYS = ("fpr95", "fpr95_oodpos", "auroc", "aupr_in", "aupr_out", "detection_error")


def check_scores(
    scores: ArrayLike, *, role: str = "OOD", detector: str | None = None, dataset: str | None = None
) -> np.ndarray:
    """Return ``scores`` as a 1-D float64 array; raise :class:`OodbenchError` if empty or non-finite."""
    who = f"detector {detector!r}" if detector else "the detector"
    where = f"{role} set {dataset!r}" if dataset else f"the {role} set"
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim > 1 and arr.size == max(arr.shape):
        arr = arr.reshape(-1)  # (N, 1) / (1, N) columns are fine
    if arr.ndim != 1:
        raise OodbenchError(f"{who} produced scores of shape {arr.shape} on {where}; expected one score "
                            "per sample (a 1-D array)")
    if arr.size == 0:
        raise OodbenchError(f"{who} produced no scores on {where} (empty array); check that the data set "
                            "loaded and is not empty")
    n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
    if n_nan or n_inf:
        what = " and ".join(s for s in (f"{n_nan} NaN" * bool(n_nan), f"{n_inf} inf" * bool(n_inf)) if s)
        raise OodbenchError(f"{who} produced {what} scores on {where} (of {arr.size}); check the model "
                            "and inputs for overflow before computing metrics")
    return arr


def _check_pair(id_scores: ArrayLike, ood_scores: ArrayLike, detector: str | None = None,
                dataset: str | None = None, id_dataset: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    return (check_scores(id_scores, role="ID", detector=detector, dataset=id_dataset),
            check_scores(ood_scores, role="OOD", detector=detector, dataset=dataset))


def min_count(n: int, level: float) -> int:
    """Smallest integer ``k`` with ``k / n >= level`` evaluated in float64 (as sklearn's ``tpr >= level``)."""
    if not 0.0 < level <= 1.0:
        raise OodbenchError(f"recall level must be in (0, 1], got {level}")
    k = min(max(math.ceil(level * n), 1), n)
    while k > 1 and (k - 1) / n >= level:
        k -= 1
    while k < n and k / n < level:
        k += 1
    return k


def group_counts(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group pooled scores by distinct value, descending.

    Returns ``(values, gid, good)``: the distinct values in descending order, and for each ID / OOD
    sample the index of its group in ``values``.
    """
    uniq, inv = np.unique(np.concatenate([id_scores, ood_scores]), return_inverse=True)
    g = (uniq.size - 1) - inv.reshape(-1)
    return uniq[::-1], g[: id_scores.size], g[id_scores.size:]


def metrics_from_group_counts(id_cnt: np.ndarray, ood_cnt: np.ndarray, level: float = 0.95,
                              keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """All :data:`METRIC_KEYS` (or only ``keys``) from per-group ID/OOD counts (groups in descending score order).

    Works on a trailing group axis, so ``(..., G)`` arrays (e.g. bootstrap weights) give ``(...)`` results; asking
    for fewer ``keys`` skips the others' work (same numbers, e.g. a joint bootstrap of AUROC and FPR95 only).
    """
    want = set(METRIC_KEYS if keys is None else keys)
    id_cnt, ood_cnt = np.asarray(id_cnt, np.float64), np.asarray(ood_cnt, np.float64)
    n, m = id_cnt.sum(-1, keepdims=True), ood_cnt.sum(-1, keepdims=True)
    tp, fp = np.cumsum(id_cnt, -1), np.cumsum(ood_cnt, -1)  # #ID >= v, #OOD >= v
    tpr, fpr = tp / n, fp / m
    n_int, m_int = int(n.reshape(-1)[0]), int(m.reshape(-1)[0])
    out = {}
    if "auroc" in want:
        zero = np.zeros_like(tpr[..., :1])
        tpr0, fpr0 = np.concatenate([zero, tpr], -1), np.concatenate([zero, fpr], -1)
        # AUROC: trapezoid through (0,0) and every distinct threshold = Mann-Whitney U / (n m), ties count 1/2.
        out["auroc"] = np.sum(np.diff(fpr0, axis=-1) * (tpr0[..., 1:] + tpr0[..., :-1]) / 2, -1)
    if "aupr_in" in want:
        # AUPR-in = average precision, ID positive: sum over thresholds of (recall step) * precision.
        prec_in = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        out["aupr_in"] = np.sum(id_cnt / n * prec_in, -1)
    ood_le = m - (fp - ood_cnt)  # #OOD <= v
    id_le = n - (tp - id_cnt)  # #ID <= v
    if "aupr_out" in want:
        # AUPR-out = average precision, OOD positive with score -s (flag OOD when s <= v).
        prec_out = np.divide(ood_le, ood_le + id_le, out=np.zeros_like(ood_le), where=(ood_le + id_le) > 0)
        out["aupr_out"] = np.sum(ood_cnt / m * prec_out, -1)
    if "detection_error" in want:
        # Detection error: min over thresholds of 0.5 (1 - TPR) + 0.5 FPR; 0.5 = reject-all / accept-all.
        out["detection_error"] = np.minimum(np.min(0.5 * (1 - tpr) + 0.5 * fpr, -1), 0.5)
    if "fpr95" in want:
        # FPR at TPR >= level, ID positive: first (highest) threshold whose ID recall reaches k / n.
        g = np.argmax(tp >= min_count(n_int, level), -1)
        out["fpr95"] = np.take_along_axis(fpr, g[..., None], -1)[..., 0]
    if "fpr95_oodpos" in want:
        # OpenOOD: OOD positive with -s; lowest s-threshold flagging >= level of OOD; report ID flagged.
        g2 = np.sum(ood_le >= min_count(m_int, level), -1) - 1
        out["fpr95_oodpos"] = np.take_along_axis(id_le / n, g2[..., None], -1)[..., 0]
    return {k: out[k] for k in ("fpr95", "fpr95_oodpos", "auroc", "aupr_in", "aupr_out", "detection_error")
            if k in out}


def _all(id_scores: np.ndarray, ood_scores: np.ndarray, level: float = 0.95) -> dict[str, float]:
    values, gid, good = group_counts(id_scores, ood_scores)
    size = values.size
    res = metrics_from_group_counts(np.bincount(gid, minlength=size), np.bincount(good, minlength=size), level)
    return {k: float(v) for k, v in res.items()}


def auroc(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under the ROC curve, ID positive; ``P(s_id > s_ood) + 0.5 P(s_id = s_ood)`` (= sklearn's)."""
    return _all(*_check_pair(id_scores, ood_scores))["auroc"]


def aupr_in(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Average precision with ID positive and score ``s`` (= sklearn ``average_precision_score``)."""
    return _all(*_check_pair(id_scores, ood_scores))["aupr_in"]


def aupr_out(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Average precision with OOD positive and score ``-s`` (= sklearn ``average_precision_score``)."""
    return _all(*_check_pair(id_scores, ood_scores))["aupr_out"]


def detection_error(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """ODIN's detection error ``min_t 0.5 (1 - TPR(t)) + 0.5 FPR(t)``, exact over every distinct score
    (accept ``s >= t``) plus the reject-all threshold; never above 0.5."""
    return _all(*_check_pair(id_scores, ood_scores))["detection_error"]


def fpr_at_tpr(id_scores: ArrayLike, ood_scores: ArrayLike, tpr: float = 0.95,
               rule: Literal["at_least", "nearest"] = "at_least") -> float:
    """FPR (fraction of OOD accepted as ID) at a TPR level, ID positive.

    ``rule="at_least"`` (default): ``t`` is the largest threshold with ``#{ID >= t} / n >= tpr``, i.e. the
    k-th largest ID score with k the smallest integer with ``k / n >= tpr``; returns ``#{OOD >= t} / m``
    (ties at ``t`` are accepted). This equals the Energy/OE ``fpr_and_fdr_at_recall`` whenever some
    threshold has recall exactly ``tpr`` and no OOD score falls strictly between the k-th and (k+1)-th
    largest ID scores (e.g. 10,000 continuous ID scores).

    ``rule="nearest"`` reproduces ``fpr_and_fdr_at_recall`` exactly: over the distinct pooled score values
    ``v >= min(ID)`` it picks the recall nearest to ``tpr`` (|recall - tpr| in float64) and, among ties,
    the lowest ``v`` (so OOD scores just above the (k+1)-th ID score also count as false positives);
    the recall may then be below ``tpr`` when n is not a multiple of 1 / (1 - tpr).
    """
    ids, oods = _check_pair(id_scores, ood_scores)
    if rule == "at_least":
        return _all(ids, oods, tpr)["fpr95"]
    if rule != "nearest":
        raise OodbenchError(f"unknown fpr_at_tpr rule {rule!r}; use 'at_least' or 'nearest'")
    ids_sorted, oods_sorted = np.sort(ids), np.sort(oods)
    v = np.unique(np.concatenate([ids, oods]))
    v = v[v >= ids_sorted[0]]  # ascending thresholds, recall 1 first
    recall = (ids.size - np.searchsorted(ids_sorted, v, "left")) / ids.size
    i = int(np.argmin(np.abs(recall - tpr)))  # first = lowest threshold among ties
    return float((oods.size - np.searchsorted(oods_sorted, v[i], "left")) / oods.size)


def fpr95_oodpos(id_scores: ArrayLike, ood_scores: ArrayLike, tpr: float = 0.95) -> float:
    """OpenOOD's FPR@95: OOD is the positive class with score ``-s``.

    ``t`` is the smallest threshold with ``#{OOD <= t} / m >= tpr`` (the k-th smallest OOD score); returns
    the fraction of ID samples flagged as OOD, ``#{ID <= t} / n``. Equals ``fpr_at_tpr(-ood, -id)``.
    (OpenOOD reads it off sklearn's ``roc_curve`` with ``drop_intermediate=True``, which can only differ
    when collinear ROC points are dropped.)
    """
    return _all(*_check_pair(id_scores, ood_scores), tpr)["fpr95_oodpos"]


def id_accuracy(logits_or_preds: ArrayLike, labels: ArrayLike) -> float:
    """Top-1 accuracy on the ID test set: ``(N, C)`` logits are argmax-ed, ``(N,)`` are predictions."""
    pred, lab = np.asarray(logits_or_preds), np.asarray(labels).reshape(-1)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    pred = pred.reshape(-1)
    if pred.size == 0 or pred.size != lab.size:
        raise OodbenchError(f"id_accuracy needs one prediction per label, got {pred.size} predictions "
                            f"for {lab.size} labels")
    return float(np.mean(pred == lab))


def compute_all(id_scores: ArrayLike, ood_scores: ArrayLike, *, detector: str | None = None,
                dataset: str | None = None, id_dataset: str | None = None) -> dict[str, float]:
    """All exact metrics (:data:`METRIC_KEYS`) as fractions; ``detector`` / ``dataset`` (OOD set) /
    ``id_dataset`` only name things in error messages."""
    return _all(*_check_pair(id_scores, ood_scores, detector, dataset, id_dataset))
