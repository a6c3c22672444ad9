"""Table builders on a small synthetic results set: Δ, the † flag, "not run" rows, determinism, make_tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from oodbench.paths import REPO_ROOT
from oodbench.tables import energy_table1, layout, mcd, odin_table2, posthoc_cifar
from oodbench.tables.compare import cell

PAPER_COLS = ["paper", "table", "id_dataset", "arch", "ood_dataset", "method", "hyperparams", "fpr95", "auroc",
              "aupr_in", "aupr_out", "detection_error", "tnr95", "id_acc_or_error", "source"]
METRICS = ["fpr95", "auroc", "aupr_in", "aupr_out", "detection_error"]


def paper_row(**kw: object) -> dict[str, object]:
    return {**dict.fromkeys(PAPER_COLS, None), "paper": "synthetic", "source": "test", **kw}


def run_row(ood: str, detector: str, checkpoint: str = "odin_densenet10", status: str = "ok",
            ckpt_path: str | None = None, **metrics: float) -> dict[str, object]:
    """A stored result row as run.py writes it (fractions), std 0.01 on every metric unless given."""
    vals = {m: metrics.get(m, 0.5) for m in METRICS}
    stds = {f"{m}_std": metrics.get(f"{m}_std", 0.01) for m in METRICS}
    config = {"arch": {"checkpoint": ckpt_path or checkpoint},
              "protocol": {"name": "default", "id_holdout": 0, "ood_holdout": 0, "max_ood": None,
                           "metrics": "standard", "bootstrap": 200}}
    return {"experiment": "synthetic", "id_dataset": "cifar10", "arch": "densenet100", "checkpoint": checkpoint,
            "checkpoint_sha256": "ab" * 32, "detector": detector, "protocol": "default",
            "id_source": "cifar10 1017/10000 (synthetic)", "id_notes": None, "n_id": 1017, "id_acc": 0.95,
            "git_commit": "0123456789abcdef", "config": json.dumps(config), "ood_dataset": ood, "status": status,
            "detector_params": "{}", "n_ood": 2000, **(vals if status == "ok" else dict.fromkeys(METRICS)),
            **(stds if status == "ok" else {})}


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    """results/{paper,runs} with a tiny ODIN, Energy and MCD table and three run CSVs."""
    paper, runs = tmp_path / "paper", tmp_path / "runs"
    paper.mkdir()
    t2 = "Table 2 (synthetic)"
    dn, wrn = "DenseNet-BC (L=100,k=12)", "WRN-28-10"
    pd.DataFrame([
        # ours fpr95 40.0 ± 1.0 vs 37.2 → Δ +2.8 > 2σ ≈ 2.0 → †; auroc 95.0 ± 1.0 vs 94.8 → Δ +0.2, within
        paper_row(table=t2, id_dataset="CIFAR-10", arch=dn, ood_dataset="iSUN", method="Baseline (MSP, T=1, eps=0)",
                  fpr95=37.2, auroc=94.8, aupr_in=95.9, aupr_out=93.1, detection_error=10.8),
        paper_row(table=t2, id_dataset="CIFAR-10", arch=dn, ood_dataset="LSUN (crop)", method="ODIN",
                  fpr95=4.8, auroc=99.1, aupr_in=99.1, aupr_out=99.1, detection_error=4.9),
        paper_row(table=t2, id_dataset="CIFAR-10", arch=wrn, ood_dataset="iSUN", method="ODIN",
                  fpr95=0.4, auroc=99.9, aupr_in=99.9, aupr_out=99.9, detection_error=1.9),
    ], columns=PAPER_COLS).to_csv(paper / "odin_liang2018.csv", index=False)
    pd.DataFrame([paper_row(table="Table 1 (avg) - official README", id_dataset="CIFAR-10", arch="WRN-40-2",
                            ood_dataset="average of 6", method="Softmax score (MSP)", fpr95=51.04)],
                 columns=PAPER_COLS).to_csv(paper / "energy_liu2020.csv", index=False)
    pd.DataFrame([paper_row(table="Main OOD table - PARTIAL", id_dataset="CIFAR-10", arch="DenseNet-BC (L=100, k=12)",
                            ood_dataset="iSUN", method="MCD (Ours)", fpr95=0.6, auroc=99.9, detection_error=1.3)],
                 columns=PAPER_COLS).to_csv(paper / "mcd_yu2019.csv", index=False)
    (runs / "odin_table2").mkdir(parents=True)
    pd.DataFrame([run_row("isun", "msp", fpr95=0.40, auroc=0.95, aupr_in=0.959, aupr_out=0.931, detection_error=0.108),
                  run_row("lsun_crop", "odin", status="not_available")]
                 ).to_csv(runs / "odin_table2" / "a.csv", index=False)
    (runs / "posthoc_cifar").mkdir()
    pd.DataFrame([run_row("isun", "msp", fpr95=0.30, auroc=0.95), run_row("lsun_resize", "msp", fpr95=0.20),
                  run_row("isun", "energy", fpr95=0.10)]).to_csv(runs / "posthoc_cifar" / "b.csv", index=False)
    (runs / "training_cifar10").mkdir()
    trained = run_row("isun", "mcd", checkpoint="final", ckpt_path="/x/checkpoints/mcd/final.pt",
                      fpr95=0.007, auroc=0.999, detection_error=0.013)
    pd.DataFrame([{**trained, "training": json.dumps({"method": "mcd"})}]  # the checkpoint's own metadata
                 ).to_csv(runs / "training_cifar10" / "c.csv", index=False)
    return tmp_path


def test_cell_delta_and_noise_flag() -> None:
    inside = cell(95.0, 94.8, 1.0)
    assert inside["delta"] == pytest.approx(0.2) and inside["flag"] == ""
    outside = cell(40.0, 37.2, 1.0)
    assert outside["delta"] == pytest.approx(2.8) and outside["noise"] == pytest.approx(2 * (1 + 0.05**2) ** 0.5)
    assert outside["flag"] == "†"
    assert cell(None, 37.2, None)["delta"] is None and cell(40.0, None, 1.0)["flag"] == ""


def test_odin_builder_delta_flag_and_not_run(results: Path) -> None:
    df, md = odin_table2.build(results / "paper" / "odin_liang2018.csv", results / "runs" / "odin_table2")
    isun = df[(df.ood == "isun") & (df.arch == "densenet100")].set_index("metric")
    assert isun.loc["fpr95", "delta"] == pytest.approx(2.8) and isun.loc["fpr95", "flag"] == "†"
    assert isun.loc["auroc", "delta"] == pytest.approx(0.2) and isun.loc["auroc", "flag"] == ""
    assert isun.loc["fpr95", "n_ood"] == 2000
    assert set(df[df.ood == "lsun_crop"].status) == {"not run: LSUN (crop) data not available here"}
    assert set(df[df.arch == "wrn28_10"].status) == {"not run: no published weights here"}
    assert "40.0 / 37.2 (+2.8)†" in md and "95.0 / 94.8 (+0.2) |" in md
    assert "**4 of 5 cells reproduced within noise**" in md


def test_energy_builder_wrn_not_run_and_other_network_block(results: Path) -> None:
    df, md = energy_table1.build(results / "paper" / "energy_liu2020.csv", results / "runs" / "posthoc_cifar")
    wrn = df[df.block == "WRN-40-2 (paper)"]
    assert set(wrn.status) == {"not run: WRN-40-2 weights not available (cifar10_wrn_pretrained_epoch_99.pt; "
                               "see oodbench/models/registry.py)"}
    ours = df[(df.block != "WRN-40-2 (paper)") & (df.id == "cifar10")].set_index(["method", "metric"])
    assert ours.loc[("Softmax score", "fpr95"), "ours"] == pytest.approx(25.0)  # mean of iSUN 30 and LSUN 20
    assert ours.loc[("Softmax score", "fpr95"), "published"] is None or pd.isna(
        ours.loc[("Softmax score", "fpr95"), "published"])
    assert ours.loc[("Energy score", "fpr95"), "ours"] == pytest.approx(10.0)  # iSUN only: the set we have
    assert ours.loc[("Outlier Exposure (OE), MSP score", "fpr95"), "status"].startswith("not run yet")
    assert "No cell compared with a published value" in md and "different network, not a reproduction" in md


def test_mcd_builder_finds_the_fine_tuned_checkpoint(results: Path) -> None:
    df, md = mcd.build(results / "paper" / "mcd_yu2019.csv", results / "runs" / "training_cifar10")
    row = df.set_index("metric")
    assert set(df.status) == {"ok"}
    assert row.loc["fpr95", "delta"] == pytest.approx(0.1) and row.loc["fpr95", "flag"] == ""
    assert row.loc["auroc", "flag"] == ""


def test_training_method_is_read_not_guessed(tmp_path: Path) -> None:
    row = pd.Series(run_row("isun", "energy", checkpoint="final", ckpt_path="/a/b/energy_ft/final.pt"))
    assert layout.training_method(row) == "unknown"  # a path names no method
    assert layout.training_method(pd.Series({**row, "training": json.dumps({"method": "oe"})})) == "oe"
    (tmp_path / "checkpoints.csv").write_text("sha256,method,init,log\n" + "ab" * 32 + ",mcd,odin_densenet10,x.log\n")
    assert layout.training_method(row, tmp_path) == "mcd"
    assert layout.training_method(pd.Series(run_row("isun", "msp"))) == "pretrained"


def test_builders_are_deterministic(results: Path) -> None:
    for build, paper, runs in [(odin_table2.build, "odin_liang2018.csv", "odin_table2"),
                               (energy_table1.build, "energy_liu2020.csv", "posthoc_cifar"),
                               (posthoc_cifar.build, None, "posthoc_cifar")]:
        args = (results / "paper" / paper if paper else None, results / "runs" / runs)
        (df1, md1), (df2, md2) = build(*args), build(*args)
        assert md1 == md2 and df1.to_csv(index=False) == df2.to_csv(index=False)


def test_markdown_to_latex() -> None:
    md = "# T\n\n## a_b\n\n| x | y |\n|---|---|\n| 1.0 / 2.0 (-1.0)† | **50 %** |\n\ntext\n"
    tex = layout.markdown_to_latex(md)
    assert r"\begin{tabular}{ll}" in tex and r"% a\_b" in tex
    assert r"1.0 / 2.0 (-1.0)$^\dagger$ & \textbf{50 \%} \\" in tex


def test_make_tables_end_to_end(results: Path) -> None:
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "make_tables.py"), "--results", str(results)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    assert first.returncode == 0, first.stderr
    out = results / "tables"
    names = ["odin_table2", "energy_table1", "mcd", "posthoc_cifar", "react_imagenet"]
    assert "skipped react_imagenet" in first.stdout  # its published CSV is not in the synthetic set
    built = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    for name in names[:4]:
        assert {f"{name}.md", f"{name}.csv", f"{name}.tex"} <= set(built)
    assert "40.0 / 37.2 (+2.8)†" in built["odin_table2.md"].decode()
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    assert second.returncode == 0, second.stderr
    assert {p.name: p.read_bytes() for p in sorted(out.iterdir())} == built
