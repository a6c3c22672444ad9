"""Why one global ReAct clip behaves so differently on the four CIFAR DenseNet-BC-100 checkpoints.

ReAct (Sun et al., NeurIPS 2021, Eq. 1) clips every penultimate unit at c = the p-th percentile of *all* ID-train
activations pooled over units. When many units are (near) dead, the pooled percentile is pulled down and c falls
below the typical activation of the live units, so the clip flattens exactly the units that carry the class signal.

For each checkpoint this script takes the ID-train penultimate features the runs fit on (the exact training subset;
served by the representation cache when a run has computed them) and writes
  - ``results/figures/react_units.png``: per-unit mean activation, sorted, with the p = 90 / 95 / 99 clips;
  - ``results/figures/react_units.md``: the counts quoted on the ReAct pages (units near zero, live units whose
    mean lies above each clip, the share of activation mass each clip removes).

    python scripts/react_units.py          (needs matplotlib: pip install -e ".[figures]")
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from oodbench.paths import CONFIG_DIR, REPO_ROOT  # noqa: E402

CHECKPOINTS = {"odin_densenet10": ("cifar10", "odin"), "dice_densenet_cifar10": ("cifar10", "dice"),
               "odin_densenet100": ("cifar100", "odin"), "dice_densenet_cifar100": ("cifar100", "dice")}
PERCENTILES = (90, 95, 99)
NEAR_ZERO = 0.01  # a unit is "near zero" when its mean activation is below 1 % of the largest unit mean


def train_features(id_name: str, weights: str) -> tuple[torch.Tensor, str]:
    """ID-train penultimate features exactly as ``python run.py detector=react id=<id> arch.weights=<w>`` fits."""
    from hydra import compose, initialize_config_dir

    from oodbench.data.base import protocol_subset
    from oodbench.runner.main import load_set, open_session

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"id={id_name}", f"arch.weights={weights}", "detector=react"])
    s = open_session(cfg)
    train = protocol_subset(load_set(cfg, cfg.id, f"ID train set {id_name}", "id", split="train"),
                            max_images=cfg.protocol.max_fit, seed=cfg.protocol.seed)
    return s.representations(train).features.double(), train.describe()


def unit_facts(f: torch.Tensor) -> dict[str, float]:
    means = f.mean(0)
    live = means >= NEAR_ZERO * float(means.max())
    out: dict[str, float] = {"units": f.shape[1], "near_zero": int((~live).sum()), "live": int(live.sum())}
    flat = f.flatten()
    for p in PERCENTILES:
        c = float(np.percentile(flat.float().numpy(), p))  # ReAct's clip, exactly as ReAct.fit computes it
        out[f"c{p}"] = c
        out[f"live_above_c{p}"] = int((means[live] > c).sum())
        out[f"mass_removed_c{p}"] = float((f - f.clamp(max=c)).sum() / f.sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "figures")
    args = ap.parse_args()
    try:
        import matplotlib
    except ImportError:
        sys.exit('react_units.py needs matplotlib: pip install -e ".[figures]"')
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    facts, fig_data = {}, {}
    for ckpt, (id_name, weights) in CHECKPOINTS.items():
        feats, source = train_features(id_name, weights)
        facts[ckpt] = {**unit_facts(feats), "source": source}
        fig_data[ckpt] = np.sort(feats.mean(0).numpy())[::-1]

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=False)
    for ax, (ckpt, means) in zip(axes, fig_data.items()):
        ax.plot(np.arange(len(means)), means, color="k", lw=1.2, label="unit mean activation (sorted)")
        for p, style in zip(PERCENTILES, ("-", "--", ":")):
            ax.axhline(facts[ckpt][f"c{p}"], color="tab:red", ls=style, lw=1, label=f"ReAct clip, p = {p}")
        ax.set_title(f"{ckpt}\n{facts[ckpt]['near_zero']} of {facts[ckpt]['units']} units near zero", fontsize=9)
        ax.set_xlabel("penultimate unit (sorted by mean)")
    axes[0].set_ylabel("mean ID-train activation")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "react_units.png", dpi=110)

    head = ["checkpoint", "ID-train images", "units", "near zero (< 1 % of max mean)",
            *(f"c (p = {p})" for p in PERCENTILES), *(f"live units above c{p}" for p in PERCENTILES),
            *(f"activation mass clipped, p = {p}" for p in PERCENTILES)]
    lines = ["# ReAct's pooled clip vs the live units of each checkpoint", "",
             "Command: `python scripts/react_units.py`. Figure: [react_units.png](react_units.png). "
             "c = ReAct's clip (the p-th percentile of all ID-train activations pooled over units).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ckpt, f in facts.items():
        lines.append("| " + " | ".join([f"`{ckpt}`", f["source"], str(f["units"]), str(f["near_zero"]),
                                        *(f"{f[f'c{p}']:.3f}" for p in PERCENTILES),
                                        *(f"{f[f'live_above_c{p}']} of {f['live']}" for p in PERCENTILES),
                                        *(f"{100 * f[f'mass_removed_c{p}']:.1f} %" for p in PERCENTILES)]) + " |")
    (args.out / "react_units.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
