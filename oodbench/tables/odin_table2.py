"""ODIN Table 2 (Liang et al., ICLR 2018): DenseNet-BC-100 / WRN-28-10 on CIFAR-10/100, baseline vs ODIN."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from oodbench.tables.compare import cell, fmt_cell, load_runs
from oodbench.tables.names import ARCHS, ID_DATASETS, METRICS, OOD_DATASETS

METHODS = {"Baseline (MSP, T=1, eps=0)": "msp", "ODIN": "odin"}
TITLE = "ODIN Table 2 — distinguishing in- and out-of-distribution test data (Liang et al., ICLR 2018)"


def _ours(runs: pd.DataFrame, arch: str, id_name: str, ood: str, det: str) -> pd.Series | None:
    if runs.empty:
        return None
    hit = runs[(runs.arch == arch) & (runs.id_dataset == id_name) & (runs.ood_dataset == ood) & (runs.detector == det)]
    return None if hit.empty else hit.iloc[0]


def build(paper_csv: Path, runs_dir: Path) -> tuple[pd.DataFrame, str]:
    """Long-form comparison (one row per published cell) and the Markdown page."""
    paper = pd.read_csv(paper_csv)
    paper = paper[paper.table.str.startswith("Table 2")]
    runs = load_runs(runs_dir)
    long, md_rows = [], []
    for p in paper.itertuples():
        arch, id_name = ARCHS.get(p.arch, p.arch), ID_DATASETS[p.id_dataset]
        ood, det = OOD_DATASETS[p.ood_dataset], METHODS[p.method]
        ours = _ours(runs, arch, id_name, ood, det)
        status = "ok" if ours is not None and ours.status == "ok" else (
            "not run: no published weights here" if arch != "densenet100"
            else f"not run: {p.ood_dataset} data not available here" if ours is not None
            else "not run yet (python run.py +experiment=odin_table2)")
        cells = {}
        for m in METRICS:
            std = ours.get(f"{m}_std") if status == "ok" else None
            ours_m = 100 * ours[m] if status == "ok" else None
            cells[m] = cell(ours_m, getattr(p, m), 100 * std if std is not None else None)
            long.append({"arch": arch, "id": id_name, "ood": ood, "method": det, "metric": m, "status": status,
                         "n_id": ours.n_id if status == "ok" else None,
                         "n_ood": ours.n_ood if status == "ok" else None,
                         **{k: cells[m][k] for k in ("ours", "published", "delta", "noise", "flag")}})
        row = [p.arch, p.id_dataset, p.ood_dataset, "baseline" if det == "msp" else "ODIN"]
        n = f"{int(ours.n_id)} / {int(ours.n_ood)}" if status == "ok" else ""
        row += [fmt_cell(cells[m]) for m in METRICS] if status == "ok" else [status] + [""] * (len(METRICS) - 1)
        md_rows.append(row + [n])
    df = pd.DataFrame(long)
    return df, _markdown(df, md_rows, runs)


def _markdown(df: pd.DataFrame, rows: list[list[str]], runs: pd.DataFrame) -> str:
    ran = df[df.status == "ok"]
    within = int((ran.flag == "").sum())
    head = ["Network", "ID", "OOD", "Method", *METRICS.values(), "n ID / OOD"]
    lines = [f"# {TITLE}", "", *_protocol(runs), "",
             f"**{within} of {len(ran)} cells reproduced within noise** (|Δ| ≤ 2σ; σ = bootstrap over our ID and OOD "
             "images, combined with the paper's 0.1-point rounding); † marks the others. Cells: ours / published (Δ), "
             "percent.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    flagged = ran[ran.flag != ""]
    if len(flagged):
        lines += ["", "## Cells outside the noise", ""]
        lines += [f"- {r.id} {r.ood} {r.method} {METRICS[r.metric]}: ours {r.ours:.1f}, published {r.published:.1f}, "
                  f"Δ {r.delta:+.1f}, 2σ {r.noise:.1f}" for r in flagged.itertuples()]
    lines += ["", "## Reading the differences", "", *ANALYSIS]
    return "\n".join(lines) + "\n"


ANALYSIS = [
    "- **CIFAR-10 reproduces.** Apart from TinyImageNet (crop), every available cell is within noise but one "
    "(Uniform, ODIN, detection error 0.3 vs 0.5: a 0.2-point gap at the floor), ODIN's gains included "
    "(e.g. LSUN resize FPR95 33.6 → 3.8 published, 28.8 → 3.5 ours).",
    "- **TinyImageNet (crop) is not ODIN's data set.** ODIN's crop offsets were never published; ours are seeded "
    "random 32×32 crops of the same 64×64 images. The crops differ, and so do the numbers, in both directions "
    "of difficulty (worse for CIFAR-100 by far). Treat these cells as a different OOD set, not a failed "
    "reproduction.",
    "- **CIFAR-100 natural-image cells share one shift** (AUROC ≈ 1.5–2.5 lower, FPR95 ≈ 4–8 higher, for both "
    "the baseline and ODIN, while Uniform and Gaussian match to ≤ 1 point). One ID sample feeds every cell: our "
    "916 ID images are the first of the official test set, ODIN scored images 1000–9999. A shared ID-sampling "
    "error moves all cells of a column together, and each cell's shift is 1–1.5× its own 2σ. The same "
    "checkpoint's ID accuracy on our subset is 78.5 % vs 77.6 % published, so the subset is not representative "
    "to better than ~1 point. Running with the full official test set (`id.download=true`, or torchvision's "
    "files under the data dir) settles it; we cannot here.",
    "- The CIFAR-10 baseline FPR95 cells are 4–9 points *below* the paper (within the FPR95 noise, which is "
    "large: 2σ ≈ 6–10 points with ~1,000 ID images, because only ~50 ID images lie below the 95 % TPR "
    "threshold).",
]


def _protocol(runs: pd.DataFrame) -> list[str]:
    if runs.empty:
        return ["No stored runs yet: `python run.py +experiment=odin_table2`."]
    ok = runs[runs.status == "ok"]
    ckpts = sorted({f"`{r.checkpoint}` (sha256 `{r.checkpoint_sha256[:16]}…`)" for r in ok.itertuples()})
    ids = sorted({f"{r.id_source}, top-1 {100 * r.id_acc:.2f} %" for r in ok.itertuples()})
    commits = sorted({str(c)[:12] for c in ok.git_commit})
    notes = sorted({n for n in ok.id_notes.dropna()})
    return [
        "Protocol: ODIN's official evaluation (`protocol=odin`): OOD images 0–999 held out, the rest scored; "
        "ID positive; FPR at 95 % TPR averaged over the thresholds of ODIN's 100,000-step grid whose TPR is in "
        "[94.95, 95.05] %; detection error = min over the grid of 0.5(1−TPR)+0.5·FPR; AUROC/AUPR as ODIN's "
        "`calMetric.py` sums them. Baseline: MSP (T = 1). ODIN: T = 1000, ε per set as published "
        "(CIFAR-10: 0.0014, LSUN crop 0; CIFAR-100: 0.0028, TinyImageNet crop 0.0014).",
        "",
        f"- Checkpoints: {', '.join(ckpts)}",
        f"- ID data: {'; '.join(ids)}",
        *[f"- Deviation: {n}" for n in notes],
        "- TinyImageNet (crop) is approximate: the same 10,000 Tiny-ImageNet test images, but our seeded crops "
        "(ODIN never published its crop offsets).",
        f"- Runs: `python run.py +experiment=odin_table2`; stored rows `results/runs/odin_table2/`; "
        f"git {', '.join(commits)}; per-row device, timings and the resolved config are in those CSVs.",
    ]
