"""Curves of the fit-set-size page: AUROC against the number of ID training images each detector fits on.

Reads ``results/tables/fit_size_cifar10.csv`` (``make tables`` after ``python run.py +paper=fit_size_cifar10``) and
writes ``results/figures/fit_size_cifar10.png``: per checkpoint, each detector's mean AUROC over the four
natural-image OOD sets, with a band of ± the mean of those sets' bootstrap standard deviations (the sets share
their ID images, so their errors are correlated and the mean σ, not σ/√4, is the honest width).

    python scripts/fit_size_figure.py          (needs matplotlib: pip install -e ".[figures]")
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
NATURAL = ["isun", "lsun_resize", "tin_resize", "tin_crop"]


def curves(df: pd.DataFrame) -> pd.DataFrame:
    """checkpoint, detector, fit size, mean AUROC over the natural-image sets, mean σ (percent)."""
    ok = df[(df.metric == "auroc") & (df.status == "ok") & df.ood.isin(NATURAL)].copy()
    parts = ok.detector.str.extract(r"^(?P<method>.+)_fit(?P<n>\d+)$")
    ok = ok.assign(method=parts.method, n=parts.n.astype(int))
    full = ok.groupby(["checkpoint", "method", "n"]).agg(auroc=("ours", "mean"), std=("std", "mean"),
                                                          sets=("ood", "nunique")).reset_index()
    return full[full.sets == len(NATURAL)]


def main() -> None:
    src = ROOT / "results" / "tables" / "fit_size_cifar10.csv"
    if not src.is_file():
        sys.exit(f"{src} not found: python run.py +paper=fit_size_cifar10 && make tables")
    try:
        import matplotlib
    except ImportError:
        sys.exit('fit_size_figure.py needs matplotlib: pip install -e ".[figures]"')
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(pd.read_csv(src))
    ckpts = list(dict.fromkeys(data.checkpoint))
    fig, axes = plt.subplots(1, len(ckpts), figsize=(6 * len(ckpts), 4), squeeze=False)
    for ax, ckpt in zip(axes[0], ckpts):
        for method, g in data[data.checkpoint == ckpt].groupby("method"):
            g = g.sort_values("n")
            ax.plot(g.n, g.auroc, marker="o", label=method)
            ax.fill_between(g.n, g.auroc - g["std"], g.auroc + g["std"], alpha=0.2)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sorted(data.n.unique()), [str(v) for v in sorted(data.n.unique())])
        ax.set_title(f"{ckpt}: mean AUROC, iSUN / LSUN-r / TIN-r / TIN-c", fontsize=9)
        ax.set_xlabel("ID training images the detector fits on")
    axes[0][0].set_ylabel("AUROC % (band: ± mean bootstrap σ)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out = ROOT / "results" / "figures" / "fit_size_cifar10.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    print(data.assign(auroc=data.auroc.round(2), std=data["std"].round(2)).to_string(index=False))


if __name__ == "__main__":
    main()
