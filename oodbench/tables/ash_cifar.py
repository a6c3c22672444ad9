"""ASH (Djurisic et al., ICLR 2023): the authors' notebook re-run, and our ASH-P/-B/-S on DICE's DenseNet checkpoints.

``runs_dir`` is ``results/runs/posthoc_cifar``; ImageNet rows, if any were stored, are read from the sibling
``results/runs/react_imagenet/``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from oodbench.tables import layout
from oodbench.tables.compare import load_runs
from oodbench.tables.names import OOD_LABELS

TITLE = "ASH — activation shaping (Djurisic et al., ICLR 2023)"
METRICS = {"fpr95": "FPR95", "auroc": "AUROC", "aupr_in": "AUPR-In"}
CHECKPOINTS = {"dice_densenet_cifar10": "CIFAR-10", "dice_densenet_cifar100": "CIFAR-100"}
DETECTORS = {"energy": "Energy (no shaping)", "ash_p": "ASH-P", "ash_b": "ASH-B", "ash_s": "ASH-S"}
NOT_RUN = ("not run: ImageNet-1k val and the MOS OOD sets (iNaturalist, SUN, Places, Textures) are not available "
           "here; with them: `python run.py +experiment=react_imagenet` with `detector=ash_s` (p = 90)")


def build(paper_csv: Path, runs_dir: Path) -> tuple[pd.DataFrame, str]:
    paper = pd.read_csv(paper_csv)
    imagenet = load_runs(Path(runs_dir).parent / "react_imagenet")
    long, md_pub = layout.imagenet_rows(paper, imagenet, lambda m: "ash_s" if m.startswith("ASH-S") else None, METRICS,
                                 NOT_RUN)
    runs = load_runs(runs_dir)
    sets = layout.present_sets(runs, list(OOD_LABELS))
    rows = [(f"{CHECKPOINTS[c]} {label}", c, d) for c in CHECKPOINTS for d, label in DETECTORS.items()]
    ours_md = {}
    for metric, lower in (("fpr95", True), ("auroc", False)):
        ours_md[metric], recs = layout.grid(runs, rows, sets, metric, lower_is_better=lower,
                                            missing="not run yet (python run.py +experiment=posthoc_cifar)")
        long += [{"arch": "densenet100", **r} for r in recs]
    df = pd.DataFrame(long)
    shown = runs[runs.checkpoint.isin(CHECKPOINTS) & runs.detector.isin(DETECTORS)] if not runs.empty else runs
    lines = [f"# {TITLE}", "", *PROTOCOL, "", "Our rows:",
             *layout.run_facts(shown, "`python run.py +experiment=posthoc_cifar`; stored rows "
                                      "`results/runs/posthoc_cifar/`"), "",
             layout.noise_summary(df, "The published numbers we hold are the authors' ImageNet notebook re-run "
                                      "(ResNet-50, ASH-S p = 90): not runnable here; we hold no published CIFAR "
                                      "number, so our CIFAR rows below have nothing to be compared with."),
             "", "## Published: the authors' notebook re-run (NOT the paper's table; ResNet-50, ImageNet-1k)", "",
             *layout.md_table(["Network", "OOD", "Method", *METRICS.values(), "Status", "n ID / OOD"], md_pub)]
    for metric, name in (("fpr95", "FPR95 (lower is better)"), ("auroc", "AUROC (higher is better)")):
        lines += ["", f"## Ours: DICE's DenseNet-BC-100 checkpoints (\"DenseNet-101\" in ASH), CIFAR — {name}", "",
                  "No published value to compare with (see above); ours only, percent, best of each column per "
                  "checkpoint in bold.",
                  "", *layout.md_table(["Checkpoint / detector", *layout.ood_head(sets, OOD_LABELS), "Status"],
                                       ours_md[metric])]
    return df, "\n".join(lines) + "\n"


PROTOCOL = [
    "Protocol. **Published rows** (`ash_djurisic2023.csv`): the authors' official notebook, "
    "`ood_eval.py --config config/imagenet_config.yml`: torchvision ResNet-50, ImageNet-1k val (50,000) as ID, "
    "the four MOS sets as OOD, ASH-S at p = 90 on the penultimate activations, energy score (T = 1), ID positive. "
    "The paper's CIFAR table (DenseNet-101 = DICE's DenseNet-BC-100 checkpoints; SVHN, LSUN-C, LSUN-R, iSUN, "
    "Textures, Places365; p = 95 for CIFAR) is not in our published-numbers file, so no CIFAR cell can be compared. "
    "**Ours**: ASH-P/-B/-S (`configs/detector/ash_*.yaml`: p = 95 CIFAR-10, 90 CIFAR-100; energy of the shaped "
    "logits) on DICE's checkpoints under the `posthoc_cifar` protocol: the exact ID subsets (1,017 / 916 official "
    "test images), every image of each OOD set here (iSUN, LSUN resize, TinyImageNet resize/crop, Gaussian, "
    "Uniform; only iSUN and LSUN resize are in ASH's CIFAR benchmark), exact metrics, ID positive. The Energy row "
    "is the same network without shaping.",
]
