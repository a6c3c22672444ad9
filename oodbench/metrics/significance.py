"""The statistics behind a page's marks and flags, on plain numbers (no files, no pages):

* :func:`holm` — Holm's step-down correction;
* :func:`column_tests` — the best cell of a column against every other, paired on joint-bootstrap replicates where
  both have them, else a z-test on their bootstrap σ's, Holm over the column;
* :data:`CHANCE_FLAG`, :func:`chance_flags` — how many |Δ| > 2σ flags a perfect reproduction raises over m
  independent cells; :func:`cell_pvalues` — each compared cell's two-sided p;
* :func:`simulate_flags` — the same count simulated from joint-bootstrap replicates, so correlated cells flag
  together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from oodbench.metrics.joint import paired_test

CHANCE_FLAG = math.erfc(2 / math.sqrt(2))  # P(|Δ| > 2σ) for a perfect reproduction, Δ ~ N(0, σ²): 4.55 %


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down test: which of the differences stay significant at family-wise ``alpha``."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    keep = [False] * len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - rank):
            break
        keep[i] = True
    return keep


def chance_flags(m: int, coverage: float = 0.95) -> tuple[float, int]:
    """Flags a perfect reproduction raises over ``m`` cells: the mean, and the ``coverage`` quantile of the count
    when the cells are independent (Binomial(m, 4.55 %)); shared ID images correlate the cells and widen it."""
    p, total, k = CHANCE_FLAG, 0.0, 0
    while True:
        total += math.comb(m, k) * p**k * (1 - p) ** (m - k)
        if total >= coverage or k == m:
            return m * p, k
        k += 1


def cell_pvalues(deltas: Sequence[float], noises: Sequence[float]) -> list[float]:
    """Two-sided normal p-value of each cell's Δ against its σ (``noise`` is 2σ)."""
    return [math.erfc(abs(d) / (n / 2) / math.sqrt(2)) if n > 0 else (0.0 if d else 1.0)
            for d, n in zip(deltas, noises)]


def column_tests(value: Mapping[str, float], sd: Mapping[str, float | None], reps: Mapping[str, np.ndarray],
                 lower: bool, alpha: float = 0.05) -> tuple[str, list[dict[str, Any]]]:
    """The best cell of a column (``value``: detector → metric) and its test against every other: ``paired`` on the
    replicates (``reps``: detector → (B,) replicates of this column's metric, from one joint draw) where both have
    them, else ``unpaired`` (z-test, σ_Δ² = σ_a² + σ_b²; conservative for positively correlated cells); Holm over
    the column. Returns ``(best, [{detector, delta, p, test, significant}])``."""
    top = (min if lower else max)(value.values())
    best = min((d for d in value if value[d] == top), key=lambda d: d not in reps)  # equal values: a paired one
    tests = []
    for d in (d for d in value if d != best):
        delta = value[d] - value[best]
        if d in reps and best in reps:
            tests.append((d, delta, paired_test(delta, reps[d] - reps[best])["p"], "paired"))
        else:
            s2 = (sd.get(d) or 0.0) ** 2 + (sd.get(best) or 0.0) ** 2
            p = math.erfc(abs(delta) / math.sqrt(2 * s2)) if s2 > 0 else float(delta == 0)
            tests.append((d, delta, p, "unpaired"))
    sig = holm([p for _, _, p, _ in tests], alpha)
    return best, [{"detector": d, "delta": delta, "p": p, "test": how, "significant": bool(s)}
                  for (d, delta, p, how), s in zip(tests, sig)]


def simulate_flags(errors: Sequence[np.ndarray], noises: Sequence[float], others: int, n_boot: int,
                   rng: np.random.Generator) -> dict[str, float]:
    """The number of cells a perfect reproduction flags (|error| > noise), per replicate: ``errors[i]`` are cell
    i's (B,) replicate errors from one joint draw (so correlated cells flag together), ``others`` more cells count
    as independent 4.55 % flags. Mean and 95 % quantile of the count."""
    flags = np.zeros(n_boot)
    for e, noise in zip(errors, noises):
        flags += np.abs(e) > noise
    flags += rng.binomial(others, CHANCE_FLAG, n_boot) if others else 0
    return {"mean": float(flags.mean()), "q95": int(np.quantile(flags, 0.95, method="inverted_cdf"))}

