"""Benchmark: input-perturbation grids, naive (one backward per grid point) vs shared gradient sign (one backward
per temperature / layer, one forward per ε), on the Mahalanobis Table 2 validation grids.

  python scripts/bench_grid.py [--n 64] [--out results/bench_grid.md]

ODIN: T ∈ {1, 10, 100, 1000} × 11 ε (44 points); Mahalanobis: 7 noises × 4 DenseNet layers. Same model, images
and thread count; runs alternate (naive, shared, naive, shared) and the best of each is kept; the scores of both
paths are compared (they must be equal: the shared path is the naive one with the backward hoisted).
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this checkout's oodbench, not another install

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from oodbench.data.cifar import load_cifar
from oodbench.detectors import ODIN
from oodbench.detectors.base import FitData
from oodbench.detectors.tuned import TunedMahalanobis, TunedODIN
from oodbench.models.registry import load_classifier
from oodbench.paths import REPO_ROOT, resolve
from oodbench.runner.provenance import git_commit


def _best(fn: Callable[[], torch.Tensor], other: Callable[[], torch.Tensor], repeats: int) -> tuple[float, float,
                                                                                                    float]:
    """Alternate ``fn`` and ``other``; best times and the max |difference| of their outputs."""
    times: tuple[list[float], list[float]] = ([], [])
    diff = 0.0
    for _ in range(repeats):
        outs = []
        for i, f in enumerate((fn, other)):
            t = time.perf_counter()
            outs.append(f())
            times[i].append(time.perf_counter() - t)
        diff = max(diff, float((outs[0] - outs[1]).abs().max()))
    return min(times[0]), min(times[1]), diff


def measure(n: int = 64, repeats: int = 2, n_fit: int = 1000) -> tuple[list[str], str]:
    """Time the ODIN and Mahalanobis grids naive vs shared on ``n`` CIFAR-10 test images (Mahalanobis fitted on
    ``n_fit`` training images); return the markdown table rows and the checkpoint name."""
    model, ckpt = load_classifier("odin_densenet10", resolve("weights"))
    model.eval()
    kw = {"data_dir": str(resolve("data")), "subset": "cifar10/cifar10-exact-subset.npz"}
    test, train = load_cifar("cifar10", split="test", **kw), load_cifar("cifar10", split="train", **kw)
    x = torch.cat(list(test.select(np.arange(n)).batches(n)))

    odin = TunedODIN()
    naive_odin = lambda: torch.stack([torch.stack([ODIN(t, e).score_batch(model, x)  # noqa: E731
                                                   for e in odin.epsilons]) for t in odin.temperatures])
    shared_odin = lambda: odin.grid(model, test.select(np.arange(n)), torch.device("cpu"), n)  # noqa: E731
    maha = TunedMahalanobis()
    fit = train.select(np.arange(n_fit))
    maha.fit(FitData(None, None, None, None, "bench", images=fit, model=model, batch_size=100))  # type: ignore[arg-type]
    naive_maha = lambda: torch.stack([maha._layer_grid(model, x, [e])[0] for e in maha.noises])  # noqa: E731
    shared_maha = lambda: maha._layer_grid(model, x, maha.noises)  # noqa: E731

    rows = []
    for name, points, naive, shared in (("ODIN (T, ε)", "4 T × 11 ε = 44", naive_odin, shared_odin),
                                        ("Mahalanobis noise", "7 ε × 4 layers", naive_maha, shared_maha)):
        t_naive, t_shared, diff = _best(naive, shared, repeats)
        rows.append(f"| {name} | {points} | {t_naive:.1f} | {t_shared:.1f} | {t_naive / t_shared:.1f}× | {diff:.1e} |")
        print(rows[-1], flush=True)
    return rows, f"{ckpt['name']} (sha256 {ckpt['sha256'][:12]})"


TABLE_HEAD = ["| grid | points | naive (s) | shared (s) | speedup | max abs score difference |",
              "|---|---|---|---|---|---|"]
EXPLAIN = ("Naive: one backward + one forward per grid point (ODIN) or per (noise, layer) (Mahalanobis). Shared: the "
           "gradient sign at x does not depend on ε, so one backward per temperature / layer serves the whole ε grid "
           "(`oodbench/detectors/gradient_grid.py`); `odin_tuned` and `mahalanobis_tuned` always take this path.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=64, help="CIFAR-10 test images (validation-grid stand-in)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench_grid.md")
    args = ap.parse_args()
    rows, ckpt = measure(args.n, args.repeats)
    lines = [
        "# Perturbation grids: naive vs shared gradient sign (CPU)",
        "",
        f"`python scripts/bench_grid.py --n {args.n}` — {ckpt}, {args.n} "
        f"CIFAR-10 test images, {torch.get_num_threads()} threads, best of {args.repeats} alternating runs, "
        f"torch {torch.__version__}, git {git_commit()}.",
        "",
        *TABLE_HEAD,
        *rows,
        "",
        EXPLAIN,
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
