"""Side-by-side timing of the paired comparisons a sweep summary (and the significance grid) makes.

One checkpoint's worth of cells, synthetic scores of the post-hoc table's shape: 12 detectors, 1,017 ID images and 6
OOD sets of 10,000; per set, the best cell against the 11 others, 1,000 bootstrap replicates, AUROC and FPR95.

- before: one ``paired_bootstrap``-style draw per pair (both cells' replicates recomputed for every pair) with every
  metric computed per replicate (how the summary worked until this change);
- after: one ``joint_replicates`` draw per set for all 12 cells, only AUROC and FPR95 computed.

Interleaved repeats; writes ``results/bench_paired.md``.   python scripts/bench_paired.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oodbench.metrics.core import METRIC_KEYS  # noqa: E402
from oodbench.metrics.joint import joint_replicates, paired_test  # noqa: E402
from oodbench.runner.provenance import git_commit  # noqa: E402

N_ID, N_OOD, SETS, DETECTORS, N_BOOT = 1017, 10_000, 6, 12, 1000


def scores() -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(0)
    ids = rng.normal(1.0, 1.0, N_ID)
    oods = [rng.normal(0.0, 1.0, N_OOD) for _ in range(SETS)]
    return {f"d{k}": {f"s{j}": (ids + rng.normal(0.1 * k, 0.3, N_ID), o) for j, o in enumerate(oods)}
            for k in range(DETECTORS)}


def before(cells: dict) -> list[float]:
    ps = []
    for s in cells["d0"]:
        for d in (d for d in cells if d != "d0"):
            reps = joint_replicates({"a": {s: cells[d][s]}, "b": {s: cells["d0"][s]}}, N_BOOT, 0, METRIC_KEYS)
            ps.append(paired_test(0.1, reps["a"][s]["auroc"] - reps["b"][s]["auroc"])["p"])
    return ps


def after(cells: dict) -> list[float]:
    ps = []
    for s in cells["d0"]:
        reps = joint_replicates({d: {s: v[s]} for d, v in cells.items()}, N_BOOT, 0, ("auroc", "fpr95"))
        ps += [paired_test(0.1, reps[d][s]["auroc"] - reps["d0"][s]["auroc"])["p"] for d in cells if d != "d0"]
    return ps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "results" / "bench_paired.md")
    args = ap.parse_args()
    cells = scores()
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(args.repeats):
        for name, fn in (("before", before), ("after", after)):
            t = time.perf_counter()
            fn(cells)
            times[name].append(time.perf_counter() - t)
    b, a = times["before"], times["after"]
    lines = ["# Paired comparisons: one joint draw per set vs one draw per pair", "",
             f"Command: `python scripts/bench_paired.py --repeats {args.repeats}` (git {git_commit()[:12]}, "
             f"{platform.processor() or 'cpu'}, torch threads {torch.get_num_threads()}). {DETECTORS} detectors, "
             f"{N_ID} ID + {SETS} × {N_OOD:,} OOD synthetic scores, {N_BOOT} replicates; per set the first detector "
             f"against the {DETECTORS - 1} others ({SETS * (DETECTORS - 1)} comparisons); interleaved repeats.", "",
             "| method | seconds (min / median) |", "|---|---|",
             f"| before: a draw per pair, every metric | {min(b):.1f} / {statistics.median(b):.1f} |",
             f"| after: one joint draw per set, AUROC + FPR95 | {min(a):.1f} / {statistics.median(a):.1f} |", "",
             f"Ratio before / after: **{min(b) / min(a):.2f}×** (min / min; median / median "
             f"{statistics.median(b) / statistics.median(a):.2f}×).", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
