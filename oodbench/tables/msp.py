"""MSP baseline (Hendrycks & Gimpel, ICLR 2017): the authors' MNIST notebook outputs (``msp_hendrycks2017.csv``)
and the AUPR-In table rows of ``seed_tables.csv`` beside it; our MSP rows from ``results/runs/posthoc_cifar``."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from oodbench.tables import layout
from oodbench.tables.compare import load_runs
from oodbench.tables.names import CHECKPOINTS, OOD_LABELS

TITLE = "MSP baseline — maximum softmax probability (Hendrycks & Gimpel, ICLR 2017)"
METRICS = {"auroc": "AUROC", "aupr_in": "AUPR-In", "aupr_out": "AUPR-Out"}
NO_MNIST = ("not run: MNIST, its OOD sets (Omniglot, notMNIST, CIFAR-10bw) and the notebook's MLP are not part of "
            "oodbench (ID sets here: CIFAR-10/100, ImageNet)")
NO_NET = "not run: the paper's own CIFAR network is not available here (no weights in oodbench/models/registry.py)"


def _reason(p) -> str:
    if p.id_dataset == "MNIST":
        return NO_MNIST
    if p.ood_dataset in ("SUN", "All"):
        what = "SUN" if p.ood_dataset == "SUN" else "the paper's OOD mix"
        return f"{NO_NET}; {what} is not here either"
    return NO_NET


def _variant(p) -> str:
    base = re.search(r"random baseline (\d+)", p.table)
    parts = [p.hyperparams if isinstance(p.hyperparams, str) else "",
             f"AUPR-In random baseline {base.group(1)}" if base else ""]
    return "; ".join(x for x in parts if x)


def build(paper_csv: Path, runs_dir: Path) -> tuple[pd.DataFrame, str]:
    paper = pd.read_csv(paper_csv)
    seed = Path(paper_csv).with_name("seed_tables.csv")
    if seed.is_file():
        extra = pd.read_csv(seed)
        paper = pd.concat([paper, extra[extra.paper.str.startswith("hendrycks2017")]], ignore_index=True)
    long, md = [], []
    for p in paper.itertuples():
        status = _reason(p)
        cells = layout.compare(None, p._asdict(), METRICS)
        source = "notebook (NOT the paper's table)" if p.table.startswith("NOT") else "paper table (secondary)"
        long += layout.records({"source": source, "id": p.id_dataset, "ood": p.ood_dataset, "variant": _variant(p)},
                               cells, status, None)
        md.append([source, p.id_dataset, p.arch, p.ood_dataset, _variant(p), *layout.cells_text(cells), status])
    runs = load_runs(runs_dir)
    sets = layout.present_sets(runs, list(OOD_LABELS))
    rows = [(f"`{c}`", c, "msp") for c in CHECKPOINTS]
    grids = {}
    for metric in METRICS:
        grids[metric], recs = layout.grid(runs, rows, sets, metric,
                                          missing="not run yet (python run.py +experiment=posthoc_cifar)")
        long += [{"source": "ours (DenseNet-BC-100)", **r} for r in recs]
    df = pd.DataFrame(long)
    shown = runs[runs.detector == "msp"] if not runs.empty else runs
    lines = [f"# {TITLE}", "", *PROTOCOL, "", "Our rows:",
             *layout.run_facts(shown, "`python run.py +experiment=posthoc_cifar`; stored rows "
                                      "`results/runs/posthoc_cifar/`"), "",
             layout.noise_summary(df, "No published row is runnable here (MNIST is not in oodbench; the paper's "
                                      "CIFAR network is not here); our MSP rows below are shown without Δ."), "",
             "## Published rows", "",
             *layout.md_table(["Source", "ID", "Network", "OOD", "Variant", *METRICS.values(), "Status"], md)]
    for metric, name in METRICS.items():
        lines += ["", f"## Ours: MSP on the DenseNet-BC-100 checkpoints — {name}", "",
                  "Other networks and OOD sets: ours only, percent.", "",
                  *layout.md_table(["Checkpoint", *layout.ood_head(sets, OOD_LABELS), "Status"], grids[metric])]
    return df, "\n".join(lines) + "\n"


PROTOCOL = [
    "Protocol. **Published**: the MNIST rows are the saved outputs of the authors' notebook "
    "(`Vision/MNIST_Softmax_Stats.ipynb`: a 3×256 GELU MLP, ID = all MNIST test images or only the correctly "
    "classified ones), not the paper's Table 2; the CIFAR/MNIST AUPR-In rows are the paper's table as reproduced "
    "in a secondary source, integer percent (so a 0.5-point rounding, not 0.05). In both, the ID set is the "
    "positive class for AUPR-In and OOD for AUPR-Out. **Ours**: `detector=msp` on the four DenseNet-BC-100 "
    "checkpoints under the `posthoc_cifar` protocol (exact ID test subsets of 1,017 / 916 images, every OOD "
    "image, exact metrics). AUPR-In and AUPR-Out depend on the ID:OOD ratio (ours about 1 : 9–10, the paper's "
    "CIFAR rows report their own random baselines), so only AUROC transfers between settings.",
]
