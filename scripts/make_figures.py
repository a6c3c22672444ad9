"""Score histograms (ID vs OOD) and ROC curves from the per-image scores a run writes.

Stored result rows hold metrics only; every ``python run.py …`` also writes ``scores.npz`` (keys ``id__<ood>`` and
``ood__<ood>``, higher = more in-distribution) and ``metrics.csv`` in its Hydra output dir. Give one score file per
detector (or the run dirs holding them); two or more are drawn side by side, as the Energy paper's softmax-vs-energy
figure, with their ROC curves in a last panel:

    python scripts/make_figures.py --scores <msp run dir>/scores.npz <energy run dir>/scores.npz --ood isun

writes ``results/figures/<checkpoint>_<det1>_vs_<det2>_<ood>.png`` (``--out`` to choose). Needs matplotlib
(``pip install -e ".[figures]"``); without it the script prints a note and draws nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from oodbench.paths import REPO_ROOT

AXIS = {"msp": "maximum softmax probability", "energy": "negative energy  −E(x; T) = T·logsumexp(f(x)/T)",
        "maxlogit": "maximum logit", "odin": "ODIN score (T = 1000, perturbed input)", "mcd": "−L1 discrepancy"}
NAMES = {"msp": "Softmax score", "energy": "Energy score", "maxlogit": "MaxLogit", "odin": "ODIN", "mcd": "MCD"}
OOD_NAMES = {"isun": "iSUN", "lsun_resize": "LSUN (resize)", "lsun_crop": "LSUN (crop)", "tin_resize":
             "TinyImageNet (resize)", "tin_crop": "TinyImageNet (crop)", "gaussian": "Gaussian", "uniform": "Uniform"}


def load(path: Path, ood: str) -> dict[str, object]:
    """Scores of one run for one OOD set, with the detector / checkpoint read from the ``metrics.csv`` beside it."""
    path = path / "scores.npz" if path.is_dir() else path
    with np.load(path) as z:
        if f"id__{ood}" not in z:
            sets = sorted(k[len("id__"):] for k in z.files if k.startswith("id__"))
            sys.exit(f"{path} has no scores for {ood}; it has: {', '.join(sets)}")
        id_s, ood_s = z[f"id__{ood}"].astype(np.float64), z[f"ood__{ood}"].astype(np.float64)
    meta = path.with_name("metrics.csv")
    det, ckpt, id_name = path.parent.name, "run", "ID"
    if meta.is_file():
        m = pd.read_csv(meta)
        det, ckpt, id_name = str(m.detector.iloc[0]), str(m.checkpoint.iloc[0]), str(m.id_dataset.iloc[0])
    return {"id": id_s, "ood": ood_s, "detector": det, "checkpoint": ckpt,
            "id_name": {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}.get(id_name, id_name)}


def roc(id_s: np.ndarray, ood_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """FPR and TPR over all thresholds (ID positive), AUROC, and FPR at 95 % TPR."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
    s = np.r_[id_s, ood_s]
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr, float(roc_auc_score(y, s)), float(fpr[np.searchsorted(tpr, 0.95, side="left")])


def draw(runs: list[dict[str, object]], ood: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(runs)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.6 * (n + 1), 3.8), constrained_layout=True)
    ood_name = OOD_NAMES.get(ood, ood)
    for ax, r in zip(axes[:n], runs):
        id_s, ood_s = r["id"], r["ood"]
        lo, hi = float(min(id_s.min(), ood_s.min())), float(max(id_s.max(), ood_s.max()))
        bins = np.linspace(lo, hi, 51)
        ax.hist(id_s, bins=bins, density=True, alpha=0.6, color="tab:blue",
                label=f"ID: {r['id_name']} test (n={len(id_s)})")
        ax.hist(ood_s, bins=bins, density=True, alpha=0.6, color="tab:orange",
                label=f"OOD: {ood_name} (n={len(ood_s)})")
        thr = float(np.quantile(id_s, 0.05))
        ax.axvline(thr, color="k", ls="--", lw=1, label="95 % TPR threshold")
        _, _, auc, fpr95 = roc(id_s, ood_s)
        det = str(r["detector"])
        ax.set_title(f"{NAMES.get(det, det)}: FPR95 {100 * fpr95:.1f} %, AUROC {100 * auc:.1f} %", fontsize=10)
        ax.set_xlabel(AXIS.get(det, f"{det} score") + "  (higher = more ID)", fontsize=9)
        if det == "msp":  # the ID mass sits in one bin at 1.0: a log axis keeps the OOD tail visible
            ax.set_yscale("log")
            ax.set_ylim(top=ax.get_ylim()[1] * 30)  # room for the legend above the bars
        else:
            ax.set_ylim(top=ax.get_ylim()[1] * 1.4)
        ax.set_ylabel("density" + (" (log scale)" if det == "msp" else ""))
        ax.legend(fontsize=8, loc="upper left")
    ax = axes[n]
    for r, color in zip(runs, ["tab:red", "tab:green", "tab:purple", "tab:brown"]):
        fpr, tpr, auc, fpr95 = roc(r["id"], r["ood"])
        det = str(r["detector"])
        ax.plot(fpr, tpr, color=color, lw=1.5, label=f"{NAMES.get(det, det)} (AUROC {100 * auc:.1f} %)")
        ax.plot([fpr95], [0.95], "o", color=color, ms=4)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="chance")
    ax.axhline(0.95, color="k", ls="--", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(f"false positive rate (OOD {ood_name} accepted)")
    ax.set_ylabel("true positive rate (ID accepted)")
    ax.set_title("ROC, ID positive (dots: FPR at 95 % TPR)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ckpts = sorted({str(r["checkpoint"]) for r in runs})
    ids = sorted({str(r["id_name"]) for r in runs})
    fig.suptitle(f"{', '.join(ckpts)}: {', '.join(ids)} test (ID) vs {ood_name} (OOD)", fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scores", type=Path, nargs="+", required=True,
                    help="scores.npz files (or the run dirs holding them), one per detector")
    ap.add_argument("--ood", default="isun", help="which OOD set to draw (a key suffix in the score files)")
    ap.add_argument("--out", type=Path, default=None, help="PNG path (default: results/figures/<derived name>.png)")
    args = ap.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: no figure drawn (pip install -e '.[figures]')")
        return
    runs = [load(p, args.ood) for p in args.scores]
    name = "_".join(sorted({str(r["checkpoint"]) for r in runs})) + "_" + "_vs_".join(
        str(r["detector"]) for r in runs) + f"_{args.ood}.png"
    out = args.out or REPO_ROOT / "results" / "figures" / name
    draw(runs, args.ood, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
