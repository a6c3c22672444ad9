"""Energy Table 1 (Liu et al., NeurIPS 2020): WRN-40-2 on CIFAR-10/100, averages over six OOD sets.

Reads the published rows (``energy_liu2020.csv``), our post-hoc rows (``runs_dir`` = ``results/runs/posthoc_cifar``)
and, beside them, the fine-tuning rows ``results/runs/training_cifar10/`` and logs ``results/training/`` when present.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from oodbench.tables import layout
from oodbench.tables.compare import cell, fmt_cell, load_runs
from oodbench.tables.names import ID_DATASETS

TITLE = "Energy Table 1 — averages over six OOD sets, WRN-40-2 (Liu et al., NeurIPS 2020)"
METRICS = {"fpr95": "FPR95", "auroc": "AUROC", "aupr_in": "AUPR-In"}
ENERGY_SETS = ["isun", "places365", "textures", "svhn", "lsun_crop", "lsun_resize"]  # the paper's six
# published method → (how the checkpoint was made, detector scored on it)
METHODS = {"Softmax score": ("pretrained", "msp"), "Softmax score (MSP)": ("pretrained", "msp"),
           "Energy score": ("pretrained", "energy"), "ODIN": ("pretrained", "odin"),
           "Mahalanobis": ("pretrained", "mahalanobis"), "Outlier Exposure (OE)": ("oe", "msp"),
           "Energy fine-tune": ("energy_ft", "energy"), "Energy fine-tuning": ("energy_ft", "energy")}
SOURCES = {"SECONDARY-UNVERIFIED": "third-party transcription (secondary, unverified)",  # first match wins
           "GEM": "GEM README (secondary)", "official README": "official README"}
WRN_FILES = {"cifar10": "cifar10_wrn_pretrained_epoch_99.pt", "cifar100": "cifar100_wrn_pretrained_epoch_99.pt"}
DENSENET = {"cifar10": "odin_densenet10", "cifar100": "odin_densenet100"}
# our DenseNet rows: (label, how the checkpoint was made, detector, from the fine-tuning runs?)
DENSENET_ROWS = [("Softmax score", "pretrained", "msp", False), ("Energy score", "pretrained", "energy", False),
                 ("ODIN", "pretrained", "odin", False), ("Mahalanobis", "pretrained", "mahalanobis", False),
                 ("Softmax score, pretrained (fine-tuning protocol)", "pretrained", "msp", True),
                 ("Energy score, pretrained (fine-tuning protocol)", "pretrained", "energy", True),
                 ("Outlier Exposure (OE), MSP score", "oe", "msp", True),
                 ("Energy fine-tuning, energy score", "energy_ft", "energy", True)]
TRAIN_HOW = ("python train.py method={m} id={id} arch=densenet100, then python run.py arch.checkpoint=<its final.pt> "
             "detector={d} result_set=training_cifar10 'ood=[isun,lsun_resize,tin_resize,tin_crop,gaussian,uniform]'")


def _source(table: str) -> str:
    return next((v for k, v in SOURCES.items() if k in table), table)


def _average(runs: pd.DataFrame, sets: list[str], **eq: object) -> tuple[pd.Series | None, list[str]]:
    """Mean over ``sets`` of the matching ok rows (None if any set is missing), and the sets found."""
    rows = {s: layout.find(runs, ood_dataset=s, **eq) for s in sets}
    found = [s for s, r in rows.items() if layout.is_ok(r)]
    if not found or len(found) < len(sets):
        return None, found
    return layout.mean_row([rows[s] for s in sets], [*METRICS]), found


def _all_runs(runs_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    training = Path(runs_dir).parent.parent / "training"
    posthoc = layout.with_training_method(load_runs(runs_dir), training)
    trained = layout.with_training_method(load_runs(Path(runs_dir).parent / "training_cifar10"), training)
    return posthoc, trained, training


def build(paper_csv: Path, runs_dir: Path) -> tuple[pd.DataFrame, str]:
    paper = pd.read_csv(paper_csv)
    posthoc, trained, training = _all_runs(runs_dir)
    both = pd.concat([posthoc, trained], ignore_index=True) if not trained.empty else posthoc
    long, wrn_rows, dn_rows = [], [], []
    for p in paper.itertuples():  # the published WRN-40-2 rows, every source
        id_name = ID_DATASETS[p.id_dataset]
        how, det = METHODS[p.method]
        wrn = both[both.arch == "wrn40_2"] if "arch" in both.columns else both
        ours, found = _average(wrn, ENERGY_SETS, id_dataset=id_name, detector=det, train_method=how)
        status = "ok" if ours is not None else (
            f"not run: WRN-40-2 weights not available ({WRN_FILES[id_name]}; see oodbench/models/registry.py)"
            if wrn.empty else f"not run: only {len(found)} of the 6 OOD sets available ({', '.join(found) or 'none'})")
        cells = layout.compare(ours, p._asdict(), METRICS)
        pub_err = layout.published_value(p.id_acc_or_error)
        cells["id_err"] = cell(100 * (1 - ours.id_acc) if ours is not None else None, pub_err, 0.0)
        keys = {"block": "WRN-40-2 (paper)", "source": _source(p.table), "id": id_name, "method": p.method}
        long += layout.records(keys, cells, status, ours)
        wrn_rows.append([_source(p.table), p.id_dataset, p.method, *layout.cells_text(cells), status,
                         layout.n_text(ours)])
    for id_name, ckpt in DENSENET.items():  # our DenseNet-BC-100: another network, no Δ
        label = next(k for k, v in ID_DATASETS.items() if v == id_name)
        for method, how, det, from_training in DENSENET_ROWS:
            src = trained if from_training else posthoc
            eq = {"id_dataset": id_name, "detector": det, "train_method": how}
            if how == "pretrained":
                eq["checkpoint"] = ckpt
            avail = sorted({s for s in ENERGY_SETS if layout.is_ok(layout.find(src, ood_dataset=s, **eq))})
            ours, _ = _average(src, avail, **eq) if avail else (None, [])
            status = "ok" if ours is not None else (
                "not run yet (python run.py +experiment=posthoc_cifar)" if not from_training
                else "not run: fine-tuning was run for CIFAR-10 only" if id_name != "cifar10"
                else "not run yet (" + TRAIN_HOW.format(m=how, id=id_name, d=det) + ")" if how != "pretrained"
                else "not run yet (python run.py arch.weights=odin detector=" + det + " result_set=training_cifar10)")
            cells = {m: cell(layout.ours_pct(ours, m)[0], None, layout.ours_pct(ours, m)[1]) for m in METRICS}
            cells["id_err"] = cell(100 * (1 - ours.id_acc) if ours is not None else None, None, None)
            keys = {"block": "DenseNet-BC-100 (ours, other network)", "source": "ours", "id": id_name, "method": method}
            long += layout.records(keys, cells, status, ours)
            sets = ", ".join(avail) if ours is not None else ""
            dn_rows.append([label, method, *(fmt_cell(c).replace(" / —", "") for c in cells.values()), sets,
                            status, layout.n_text(ours)])
    df = pd.DataFrame(long)
    shown = posthoc[posthoc.checkpoint.isin(DENSENET.values()) & posthoc.detector.isin(["msp", "energy", "odin",
                                                                                       "mahalanobis"])] \
        if not posthoc.empty else posthoc
    used = trained[trained.train_method.isin(["pretrained", "oe", "energy_ft"]) & trained.detector.isin(
        ["msp", "energy"])] if not trained.empty else trained
    return df, _markdown(df, wrn_rows, dn_rows, shown, used, training)


def _markdown(df, wrn_rows, dn_rows, posthoc, trained, training) -> str:
    metric_head = [*METRICS.values(), "ID err"]
    lines = [f"# {TITLE}", "", *PROTOCOL, "",
             "Our rows:", *layout.run_facts(posthoc, "`python run.py +experiment=posthoc_cifar`; stored rows "
                                                      "`results/runs/posthoc_cifar/`"),
             *layout.run_facts(trained, "fine-tuned checkpoints scored with `result_set=training_cifar10`; stored "
                                        "rows `results/runs/training_cifar10/`"),
             *[x for x in layout.training_log_facts(training) if x.startswith(("- `oe_", "- `energy_ft_"))], "",
             layout.noise_summary(df, "Every published row is WRN-40-2, whose weights are not here; the DenseNet "
                                      "block below is another network and is shown without Δ."),
             "", "## WRN-40-2 — the published table (every source)", "",
             *layout.md_table(["Source", "ID", "Method", *metric_head, "Status", "n ID / OOD"], wrn_rows),
             "", "## DenseNet-BC-100 (ODIN checkpoint), same protocol family — a different network, not a reproduction",
             "", "Our numbers only (percent), averaged over the paper's OOD sets that exist here (column *OOD sets "
                 "averaged*); the WRN-40-2 values above are not comparable cell by cell.", "",
             *layout.md_table(["ID", "Method", *metric_head, "OOD sets averaged", "Status", "n ID / OOD (sum)"],
                              dn_rows)]
    return "\n".join(lines) + "\n"


PROTOCOL = [
    "Protocol. **Paper**: WRN-40-2 pretrained with the Outlier Exposure code, full CIFAR test set (10,000 ID) vs "
    "2,000 random images of each OOD set (`len(test)//5`), every metric averaged over 10 draws and then over six "
    "OOD sets (Textures, SVHN, Places365, LSUN-Crop, LSUN-Resize, iSUN); ID positive; \"AUPR\" = AUPR-In; energy "
    "T = 1. OE and energy fine-tuning: 10 epochs from the pretrained WRN, 80 Million Tiny Images outliers, lr 0.001 "
    "cosine, 128 ID + 256 outliers per step; energy m_in = −23 (CIFAR-10) / −27 (CIFAR-100), m_out = −5, λ = 0.1. "
    "**Ours**: no WRN-40-2 weights, so no row of the published table is run. The DenseNet block uses ODIN's "
    "DenseNet-BC-100 checkpoints, the exact ID subsets (1,017 CIFAR-10 / 916 CIFAR-100 official test images), one "
    "draw, and averages only over the two of the paper's six sets available here (iSUN, LSUN-Resize; SVHN, "
    "LSUN-Crop, Places365 and Textures are not on disk). Post-hoc rows (`posthoc_cifar`) score every OOD image; "
    "ODIN uses T = 1000 and ODIN's ε (0.0014 / 0.0028), Mahalanobis the penultimate layer without input noise. "
    "Fine-tuning rows (`training_cifar10`) score at most 1,000 images per OOD set and were trained from ODIN's "
    "CIFAR-10 checkpoint on the 5,085-image CIFAR-10 training subset with Tiny-ImageNet training images as the "
    "outliers (`configs/train/`: energy m_in −23, m_out −5, λ 0.1; OE λ 0.5; both 10 epochs, lr 0.001 cosine); "
    "OE is scored with MSP (the paper's OE score is mean logit − logsumexp). The pretrained rows under the "
    "fine-tuning protocol are the like-for-like reference for the fine-tuned ones. AUPR-In depends on the ID:OOD "
    "ratio (paper 10,000 : 2,000 per set; ours about 1,000 : 9,000–10,000 post-hoc and 1,000 : 1,000 for the "
    "fine-tuning rows), so it is not comparable across these settings; FPR95 and AUROC are.",
]
