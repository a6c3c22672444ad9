"""Joint bootstrap over many cells that share their images, and the paired tests built on it.

Cells scored on the *same* ID images (one network, several detectors) and the same OOD sets are not independent:
a hard ID image lowers every detector's AUROC at once, and five metrics of one cell move together. A joint
bootstrap draws one set of ID indices per replicate and one set of indices per OOD set, and applies them to every
cell that has those images, so the replicates of all cells (and all their metrics) are drawn from their joint
sampling distribution. From it:

- :func:`paired_test`: Δ = metric(a) − metric(b) for two cells on the same images, a 95 % percentile interval
  and a two-sided p-value, p = min(1, 2·(1 + #{Δ* on the far side of 0}) / (B + 1)) — pairing removes the
  variance the two cells share, so a Δ far below either cell's own σ can be significant;
- :func:`mean_over_sets`: the replicates of a cell's mean over several OOD sets (the sets share the ID draw);
- the chance-flag simulation of the paper pages (:mod:`oodbench.tables.chance`) counts, per replicate, how many
  cells a perfect reproduction would flag.

All metrics are the exact ones (:func:`~oodbench.metrics.core.metrics_from_group_counts`), computed for every
replicate at once from per-group counts; nothing is re-sorted per replicate.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Iterable, Mapping

import numpy as np
from numpy.typing import ArrayLike

from oodbench.errors import OodbenchError
from oodbench.metrics.core import check_scores, group_counts, metrics_from_group_counts

_CHUNK_ELEMS = 4_000_000  # indices per chunk (bounds memory); fixed, so results are reproducible

Replicates = dict[Hashable, dict[str, dict[str, np.ndarray]]]  # cell -> OOD set -> metric -> (B,)


def _rng(seed: int, name: str | None) -> np.random.Generator:
    """One stream for the ID draw, one per OOD set named ``name`` (so adding a set never changes another's)."""
    return np.random.default_rng(np.random.SeedSequence([seed, 0 if name is None else 1 + zlib.crc32(name.encode())]))


def bincount_rows(groups: np.ndarray, idx: np.ndarray, size: int) -> np.ndarray:
    """Per-row counts of ``groups[idx]``: ``(b, k)`` indices → ``(b, size)`` counts (one resample per row)."""
    offsets = (np.arange(idx.shape[0]) * size)[:, None]
    return np.bincount((groups[idx] + offsets).ravel(), minlength=idx.shape[0] * size).reshape(-1, size)


def joint_replicates(pairs: Mapping[Hashable, Mapping[str, tuple[ArrayLike, ArrayLike]]], n_boot: int = 1000,
                     seed: int = 0, metrics: Iterable[str] = ("auroc", "fpr95"),
                     id_sets: Mapping[Hashable, str] | None = None) -> Replicates:
    """Bootstrap replicates of ``metrics`` for every (cell, OOD set), with shared resamples.

    ``pairs[cell][set] = (id_scores, ood_scores)``: the cell's scores of its ID images (same images, same order, in
    every pair of cells on one ID set; a detector tuned per OOD set scores them differently per set) and of OOD set
    ``set`` (same images and order for every cell that has it). ``id_sets[cell]`` names the cell's ID set (default:
    one ID set for all). Replicate ``r`` of every pair uses the same indices of its ID set and of its OOD set."""
    if n_boot < 1:
        raise OodbenchError(f"n_boot must be a positive number of bootstrap replicates, got {n_boot}")
    id_sizes: dict[str, int] = {}
    sets: dict[str, int] = {}
    groups: dict[tuple[Hashable, str], tuple[str, int, np.ndarray, np.ndarray]] = {}
    for c, per_set in pairs.items():
        id_name = (id_sets or {}).get(c, "")
        for s, (i, o) in per_set.items():
            i, o = check_scores(i, role="ID", dataset=s), check_scores(o, role="OOD", dataset=s)
            for sizes, name, size, what in ((id_sizes, id_name, i.size, "ID images"), (sets, s, o.size,
                                                                                      f"images of {s}")):
                if sizes.setdefault(name, size) != size:
                    raise OodbenchError(f"a joint bootstrap needs the same {what} for every cell: sizes "
                                        f"{sizes[name]} and {size}")
            values, gid, good = group_counts(i, o)
            groups[c, s] = (id_name, values.size, gid, good)
    metrics = tuple(metrics)
    out: dict[tuple[Hashable, str], dict[str, list[np.ndarray]]] = {k: {m: [] for m in metrics} for k in groups}
    rng_id = {name: _rng(seed, None) if name == "" else _rng(seed, "id:" + name) for name in id_sizes}
    rng_ood = {s: _rng(seed, s) for s in sets}
    per_chunk = max(1, _CHUNK_ELEMS // (sum(id_sizes.values()) + sum(sets.values()) or 1))
    for lo in range(0, n_boot, per_chunk):
        b = min(per_chunk, n_boot - lo)
        id_idx = {name: rng_id[name].integers(0, n, size=(b, n)) for name, n in id_sizes.items()}
        ood_idx = {s: rng_ood[s].integers(0, m, size=(b, m)) for s, m in sets.items()}
        for (c, s), (id_name, size, gid, good) in groups.items():
            res = metrics_from_group_counts(bincount_rows(gid, id_idx[id_name], size),
                                            bincount_rows(good, ood_idx[s], size), keys=metrics)
            for m in metrics:
                out[c, s][m].append(res[m])
    reps: Replicates = {}
    for (c, s), per_metric in out.items():
        reps.setdefault(c, {})[s] = {m: np.concatenate(v) for m, v in per_metric.items()}
    return reps


def mean_over_sets(reps: Mapping[str, Mapping[str, np.ndarray]], sets: Iterable[str], metric: str) -> np.ndarray:
    """Replicates of one cell's mean of ``metric`` over ``sets`` (the sets' replicates share the ID draw)."""
    return np.mean([reps[s][metric] for s in sets], axis=0)


def paired_test(delta: float, replicates: np.ndarray) -> dict[str, float]:
    """Δ (the full-sample difference), its 95 % percentile interval and two-sided p from the replicates of Δ."""
    d = np.asarray(replicates, np.float64)
    far = int((d <= 0).sum()) if delta > 0 else int((d >= 0).sum()) if delta < 0 else d.size
    return {"delta": float(delta), "lo": float(np.percentile(d, 2.5)), "hi": float(np.percentile(d, 97.5)),
            "p": min(1.0, 2 * (1 + far) / (d.size + 1))}
