"""One comparison cell: ours, published, Δ and a noise flag.

A cell is flagged when |Δ| exceeds twice the combined sampling noise: our bootstrap standard deviation
(resampling ID and OOD images) and the published value's rounding to 0.1 points.
"""

from __future__ import annotations

import math

ROUNDING = 0.05  # published values are printed to 0.1 points


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
