"""Bootstrap uncertainty of OOD metrics.

ID and OOD scores are resampled independently, with replacement, at their original sizes (a
stratified bootstrap), ``n_boot`` times; for each metric we report the standard deviation of the
replicates (``ddof=1``) and the 2.5 / 97.5 percentiles (the 95 % percentile interval).

For the exact metrics (:func:`~oodbench.metrics.core.compute_all`, the default) no replicate is
re-sorted: the pooled scores are grouped by distinct value once, each replicate becomes per-group
counts (``bincount`` of its indices), and all metrics are computed for all replicates at once by
:func:`~oodbench.metrics.core.metrics_from_group_counts` (AUROC there is the Mann-Whitney statistic).
Any other ``metric_fn(id, ood) -> dict`` is called once per replicate on the *same* resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
from numpy.typing import ArrayLike

from oodbench.errors import OodbenchError
from oodbench.metrics.core import _check_pair, compute_all, group_counts, metrics_from_group_counts
from oodbench.metrics.joint import bincount_rows, joint_replicates, paired_test

MetricFn = Callable[[np.ndarray, np.ndarray], Mapping[str, object]]
_CHUNK_ELEMS = 4_000_000  # indices drawn per chunk (bounds memory); fixed, so results are reproducible


def _resamples(n: int, m: int, n_boot: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(id_idx, ood_idx)`` chunks of shape ``(b, n)`` / ``(b, m)``; deterministic in ``seed``."""
    rng_id, rng_ood = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    per_chunk = max(1, _CHUNK_ELEMS // (n + m))
    for lo in range(0, n_boot, per_chunk):
        b = min(per_chunk, n_boot - lo)
        yield rng_id.integers(0, n, size=(b, n)), rng_ood.integers(0, m, size=(b, m))


def bootstrap_replicates(id_scores: ArrayLike, ood_scores: ArrayLike, metric_fn: MetricFn | None = None,
                         n_boot: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """The ``n_boot`` replicate values of each numeric metric (booleans and non-numbers are dropped)."""
    ids, oods = _check_pair(id_scores, ood_scores)
    if n_boot < 1:
        raise OodbenchError(f"n_boot must be a positive number of bootstrap replicates, got {n_boot}")
    n, m = ids.size, oods.size
    out: dict[str, list[np.ndarray]] = {}
    if metric_fn is None or metric_fn is compute_all:
        values, gid, good = group_counts(ids, oods)
        for id_idx, ood_idx in _resamples(n, m, n_boot, seed):
            res = metrics_from_group_counts(bincount_rows(gid, id_idx, values.size),
                                            bincount_rows(good, ood_idx, values.size))
            for k, v in res.items():
                out.setdefault(k, []).append(v)
    else:
        for id_idx, ood_idx in _resamples(n, m, n_boot, seed):
            for a, b in zip(id_idx, ood_idx):
                for k, v in metric_fn(ids[a], oods[b]).items():
                    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                        out.setdefault(k, []).append(np.array([float(v)]))
    return {k: np.concatenate(v) for k, v in out.items()}


def bootstrap_metrics(id_scores: ArrayLike, ood_scores: ArrayLike, metric_fn: MetricFn | None = None,
                      n_boot: int = 200, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """``{metric: (std, lo, hi)}``: bootstrap standard deviation and 95 % percentile interval.

    ``metric_fn`` defaults to :func:`~oodbench.metrics.core.compute_all` (vectorised fast path).
    """
    reps = bootstrap_replicates(id_scores, ood_scores, metric_fn, n_boot, seed)
    ddof = 1 if n_boot > 1 else 0
    return {k: (float(np.std(v, ddof=ddof)), float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
            for k, v in reps.items()}


def paired_bootstrap(a: tuple[ArrayLike, ArrayLike], b: tuple[ArrayLike, ArrayLike], n_boot: int = 1000,
                     seed: int = 0, metrics: tuple[str, ...] = ("auroc", "fpr95")) -> dict[str, dict[str, float]]:
    """Two detectors scored on the *same* images, ``a = (id, ood)`` and ``b = (id, ood)`` (same order): per metric,
    Δ = metric(a) − metric(b), its 95 % percentile interval and a two-sided p-value from ``n_boot`` paired
    resamples (the same image indices for both: :func:`~oodbench.metrics.joint.joint_replicates`).

    Pairing removes the variance the two scores share (the same hard ID images, the same OOD images), so a
    difference far smaller than either metric's own σ can be significant."""
    (ia, oa), (ib, ob) = (_check_pair(*a), _check_pair(*b))
    if ia.size != ib.size or oa.size != ob.size:
        raise OodbenchError(f"a paired comparison needs the same images: {ia.size}+{oa.size} vs {ib.size}+{ob.size}")
    full_a, full_b = compute_all(ia, oa), compute_all(ib, ob)
    reps = joint_replicates({"a": {"ood": (ia, oa)}, "b": {"ood": (ib, ob)}}, n_boot, seed, metrics)
    return {m: paired_test(float(full_a[m]) - float(full_b[m]), reps["a"]["ood"][m] - reps["b"]["ood"][m])
            for m in metrics}
