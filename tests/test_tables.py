"""The table engine on small synthetic results (real specs, synthetic stored rows): Δ, the † flag, "not run"
rows, Energy Table 1's mean over sets, declared training methods, determinism, LaTeX."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from oodbench.metrics import significance as significance_stats
from oodbench.paths import REPO_ROOT
from oodbench.tables import engine, layout
from oodbench.tables.compare import cell

PAPER_COLS = ["paper", "table", "id_dataset", "arch", "ood_dataset", "method", "hyperparams", "fpr95", "auroc",
              "aupr_in", "aupr_out", "detection_error", "tnr95", "id_acc_or_error", "source"]
METRICS = ["fpr95", "auroc", "aupr_in", "aupr_out", "detection_error"]
MCD_SHA = "18d132ba335a37f622b46eb8e835ae05de2f3272e462f30013715f7489d7681e"  # declared in oodbench/conf/paper/mcd.yaml


def paper_row(**kw: object) -> dict[str, object]:
    return {**dict.fromkeys(PAPER_COLS, None), "paper": "synthetic", "source": "test", **kw}


def run_row(ood: str, detector: str, checkpoint: str = "odin_densenet10", status: str = "ok",
            sha: str = "ab" * 32, experiment: str = "synthetic", **metrics: float) -> dict[str, object]:
    """A stored result row as run.py writes it (fractions), std 0.01 on every metric unless given."""
    vals = {m: metrics.get(m, 0.5) for m in METRICS}
    stds = {f"{m}_std": metrics.get(f"{m}_std", 0.01) for m in METRICS}
    config = {"arch": {"checkpoint": checkpoint},
              "protocol": {"name": "default", "id_holdout": 0, "ood_holdout": 0, "max_ood": None,
                           "metrics": "standard", "bootstrap": 200}}
    return {"experiment": experiment, "id_dataset": "cifar10", "arch": "densenet100", "checkpoint": checkpoint,
            "checkpoint_sha256": sha, "detector": detector, "protocol": "default",
            "id_source": "cifar10 1017/10000 (synthetic)", "id_notes": None, "n_id": 1017, "id_acc": 0.95,
            "git_commit": "0123456789abcdef", "config": json.dumps(config), "ood_dataset": ood, "status": status,
            "detector_params": "{}", "n_ood": 2000, **(vals if status == "ok" else dict.fromkeys(METRICS)),
            **(stds if status == "ok" else {})}


def store(results: Path, spec: str, rows: list[dict[str, object]], *overrides: str) -> None:
    """Write ``rows`` where the spec's cell with these overrides stores them (its composed run name)."""
    cells = [c for c in engine.build(spec, results)[2] if set(overrides) <= set(c.overrides)]
    assert len(cells) == 1, [c.overrides for c in cells]
    path = cells[0].path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{**r, "experiment": cells[0].store} for r in rows]).to_csv(path, index=False)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/{paper,runs}: a tiny ODIN, Energy and MCD table and their cells' stored rows."""
    root = tmp_path_factory.mktemp("results")
    paper = root / "paper"
    paper.mkdir()
    t2, dn, wrn = "Table 2 (synthetic)", "DenseNet-BC (L=100,k=12)", "WRN-28-10"
    pd.DataFrame([
        # ours fpr95 40.0 ± 1.0 vs 37.2 → Δ +2.8 > 2σ ≈ 2.0 → †; auroc 95.0 ± 1.0 vs 94.8 → Δ +0.2, within
        paper_row(table=t2, id_dataset="CIFAR-10", arch=dn, ood_dataset="iSUN", method="Baseline (MSP, T=1, eps=0)",
                  fpr95=37.2, auroc=94.8, aupr_in=95.9, aupr_out=93.1, detection_error=10.8),
        paper_row(table=t2, id_dataset="CIFAR-10", arch=dn, ood_dataset="LSUN (crop)", method="ODIN",
                  fpr95=4.8, auroc=99.1, aupr_in=99.1, aupr_out=99.1, detection_error=4.9),
        paper_row(table=t2, id_dataset="CIFAR-10", arch=wrn, ood_dataset="iSUN", method="ODIN",
                  fpr95=0.4, auroc=99.9, aupr_in=99.9, aupr_out=99.9, detection_error=1.9),
        paper_row(table="Table 3 (not this page)", id_dataset="CIFAR-10", arch=dn, ood_dataset="iSUN", method="ODIN"),
    ], columns=PAPER_COLS).to_csv(paper / "odin_liang2018.csv", index=False)
    pd.DataFrame([paper_row(table="Table 1 (avg) - official README", id_dataset="CIFAR-10", arch="WRN-40-2",
                            ood_dataset="average of 6", method="Softmax score (MSP)", fpr95=51.04,
                            id_acc_or_error="err:5.16")],
                 columns=PAPER_COLS).to_csv(paper / "energy_liu2020.csv", index=False)
    pd.DataFrame([paper_row(table="Main OOD table - PARTIAL", id_dataset="CIFAR-10", arch="DenseNet-BC (L=100, k=12)",
                            ood_dataset="iSUN", method="MCD (Ours)", fpr95=0.6, auroc=99.9, detection_error=1.3)],
                 columns=PAPER_COLS).to_csv(paper / "mcd_yu2019.csv", index=False)
    store(root, "odin_table2", [run_row("isun", "msp", fpr95=0.40, auroc=0.95, aupr_in=0.959, aupr_out=0.931,
                                        detection_error=0.108)], "id=cifar10", "detector=msp")
    store(root, "odin_table2", [run_row("lsun_crop", "odin", status="not_available"), run_row("isun", "odin")],
          "id=cifar10", "detector=odin")
    store(root, "energy_table1", [run_row("isun", "msp", fpr95=0.30, auroc=0.95),
                                  run_row("lsun_resize", "msp", fpr95=0.20)],
          "result_set=posthoc_cifar", "id=cifar10", "detector=msp")
    store(root, "energy_table1", [run_row("isun", "energy", fpr95=0.10)],
          "result_set=posthoc_cifar", "id=cifar10", "detector=energy")
    store(root, "mcd", [run_row("isun", "mcd", checkpoint="final", sha=MCD_SHA, fpr95=0.007, auroc=0.999,
                                detection_error=0.013)], "detector=mcd")
    return root


def test_cell_delta_and_noise_flag() -> None:
    inside = cell(95.0, 94.8, 1.0)
    assert inside["delta"] == pytest.approx(0.2) and inside["flag"] == ""
    outside = cell(40.0, 37.2, 1.0)
    assert outside["delta"] == pytest.approx(2.8) and outside["noise"] == pytest.approx(2 * (1 + 0.05**2) ** 0.5)
    assert outside["flag"] == "†"
    assert cell(None, 37.2, None)["delta"] is None and cell(40.0, None, 1.0)["flag"] == ""


def test_odin_page_delta_flag_and_not_run(results: Path) -> None:
    df, md, _ = engine.build("odin_table2", results)
    assert len(df) == 3 * 5  # the Table 3 row is filtered out
    isun = df[(df.ood == "isun") & (df.arch == "densenet100")].set_index("metric")
    assert isun.loc["fpr95", "delta"] == pytest.approx(2.8) and isun.loc["fpr95", "flag"] == "†"
    assert isun.loc["auroc", "delta"] == pytest.approx(0.2) and isun.loc["auroc", "flag"] == ""
    assert isun.loc["fpr95", "n_ood"] == 2000
    assert set(df[df.ood == "lsun_crop"].status) == {"not run: LSUN (crop) data not available here"}
    assert set(df[df.arch == "wrn28_10"].status) == {"not run: no published weights here"}
    assert "40.0 / 37.2 (+2.8)†" in md and "95.0 / 94.8 (+0.2) |" in md
    assert "**4 of 5 cells reproduced within noise**" in md
    assert "- `results/runs/odin_table2/`: 2 of 4 cells stored." in md


def test_energy_page_mean_over_sets_and_not_run(results: Path) -> None:
    df, md, _ = engine.build("energy_table1", results)
    wrn = df[df.block == "WRN-40-2 (paper)"]
    assert set(wrn.status) == {"not run: WRN-40-2 weights not available (cifar10_wrn_pretrained_epoch_99.pt; "
                               "see oodbench/models/registry.py)"}
    assert wrn.set_index("metric").loc["id_err", "published"] == pytest.approx(5.16)  # "err:5.16"
    ours = df[(df.block != "WRN-40-2 (paper)") & (df.id == "cifar10")].set_index(["method", "metric"])
    assert ours.loc[("Softmax score", "fpr95"), "ours"] == pytest.approx(25.0)  # mean of iSUN 30 and LSUN 20
    assert ours.loc[("Softmax score", "fpr95"), "n_ood"] == 4000
    assert ours.loc[("Softmax score", "id_err"), "ours"] == pytest.approx(5.0)  # 100 − 95 % top-1
    assert pd.isna(ours.loc[("Softmax score", "fpr95"), "published"])
    assert ours.loc[("Energy score", "fpr95"), "ours"] == pytest.approx(10.0)  # iSUN only: the set we have
    assert ours.loc[("Outlier Exposure (OE), MSP score", "fpr95"), "status"].startswith("not run yet")
    assert "No cell compared with a published value" in md and "different network, not a reproduction" in md


def test_mcd_page_finds_the_declared_fine_tuned_checkpoint(results: Path) -> None:
    df, _, _ = engine.build("mcd", results)
    row = df.set_index("metric")
    assert set(df.status) == {"ok"}
    assert row.loc["fpr95", "delta"] == pytest.approx(0.1) and row.loc["fpr95", "flag"] == ""
    assert row.loc["auroc", "flag"] == ""


def test_training_method_is_declared_by_sha256_not_guessed() -> None:
    spec = {"checkpoint_methods": {MCD_SHA: {"train_method": "mcd"}}}
    rows = pd.DataFrame([run_row("isun", "mcd", checkpoint="final", sha=MCD_SHA),
                         run_row("isun", "msp", checkpoint="/x/energy_ft/final.pt")])  # path says energy_ft
    assert list(engine.with_methods(rows, spec).train_method) == ["mcd", "pretrained"]
    assert not hasattr(layout, "training_method")


def test_pages_are_deterministic(results: Path) -> None:
    for name in ("odin_table2", "energy_table1"):
        (df1, md1, _), (df2, md2, _) = engine.build(name, results), engine.build(name, results)
        assert md1 == md2 and df1.to_csv(index=False) == df2.to_csv(index=False)


def test_markdown_to_latex() -> None:
    md = "# T\n\n## a_b\n\n| x | y |\n|---|---|\n| 1.0 / 2.0 (-1.0)† | **50 %** |\n\ntext\n"
    tex = layout.markdown_to_latex(md)
    assert r"\begin{tabular}{ll}" in tex and r"% a\_b" in tex
    assert r"1.0 / 2.0 (-1.0)$^\dagger$ & \textbf{50 \%} \\" in tex


def test_results_readme_counts_are_recounted_from_the_stored_pages() -> None:
    """Every count on results/README.md is the generated block, and that block is what the committed pages give."""
    from oodbench.tables import index

    tables = REPO_ROOT / "results" / "tables"
    pages = {n: (engine.load_spec(n), pd.read_csv(tables / f"{n}.csv")) for n in engine.spec_names()
             if (tables / f"{n}.csv").is_file()}
    text = (REPO_ROOT / "results" / "README.md").read_text()
    assert "\n".join(index.index_lines(pages)) in text
    prose = text[: text.index(index.BEGIN)]
    assert not re.search(r"\b\d+ of \d+\b", prose), "a hand-typed count outside the generated block"


def test_page_sentences_match_the_stored_rows() -> None:
    """Sentences of the notes files that state a result, recounted from the committed pages' CSVs."""
    tables = REPO_ROOT / "results" / "tables"
    # posthoc_cifar.md: ReAct (p = 90) below energy on every natural-image set on both CIFAR-10 checkpoints and
    # above it on every one on both CIFAR-100 checkpoints
    vs = pd.read_csv(tables / "posthoc_cifar.csv")
    react = vs[(vs.get("reference") == "energy") & (vs.detector == "react") & (vs.get("n_sets") == 4)]  # natural sets
    react = react.set_index("checkpoint")
    assert react.loc[["odin_densenet10", "dice_densenet_cifar10"], "better"].tolist() == [0, 0]
    assert react.loc[["odin_densenet100", "dice_densenet_cifar100"], "better"].tolist() == [4, 4]
    # mahalanobis_table2.md: the CIFAR-100 Mahalanobis cells are within noise; the † cells are CIFAR-100 vs LSUN
    # (resize), Baseline and ODIN
    t2 = pd.read_csv(tables / "mahalanobis_table2.csv")
    ok = t2[t2.status == "ok"]
    assert len(ok) == 36 and ok[(ok.id == "cifar100") & (ok.method == "Mahalanobis")].flag.isna().all()
    flagged = ok[ok.flag.notna()]
    assert set(zip(flagged.id, flagged.ood)) == {("cifar100", "lsun_resize")}
    assert set(flagged.method) == {"Baseline (MSP)", "ODIN"}


def test_chance_flags_and_holm() -> None:
    """A perfect reproduction flags 4.55 % of cells (|Δ| > 2σ); Holm's step-down keeps the family-wise error."""
    mean, hi = significance_stats.chance_flags(1)
    assert mean == pytest.approx(0.0455, abs=1e-4) and hi == 0
    mean, hi = significance_stats.chance_flags(100)
    assert mean == pytest.approx(4.55, abs=0.01) and hi == 8  # Binomial(100, 0.0455): P(X ≤ 8) ≥ 0.95 > P(X ≤ 7)
    assert significance_stats.holm([0.001, 0.04, 0.03, 0.2]) == [True, False, False, False]  # 0.03 > 0.05 / 3
    assert significance_stats.holm([0.01, 0.012, 0.02]) == [True, True, True]  # 0.01 ≤ .05/3, 0.012 ≤ .05/2, 0.02 ≤ .05
    cmp = pd.DataFrame({"delta": [1.0, -4.0, 0.0], "noise": [2.0, 2.0, 0.0]})  # noise = 2σ: Δ = 1σ, −4σ, exact
    p = significance_stats.cell_pvalues(cmp.delta.astype(float), cmp.noise.astype(float))
    assert p[0] == pytest.approx(0.3173, abs=1e-4) and p[1] == pytest.approx(6.334e-5, rel=1e-3) and p[2] == 1.0


def test_react_page_sentences_match_the_stored_rows() -> None:
    """oodbench/conf/paper/react_cifar.md's reading of the versus tables, recounted from the page's CSV."""
    df = pd.read_csv(REPO_ROOT / "results" / "tables" / "react_cifar.csv")
    vs = df[(df.get("reference") == "energy") & (df.metric == "auroc")].set_index(["checkpoint", "detector"])
    for ckpt in ("odin_densenet10", "dice_densenet_cifar10"):
        for p in (90, 95):
            assert vs.loc[(ckpt, f"react_p{p}"), "better"] == 0 and vs.loc[(ckpt, f"react_p{p}"), "worse_2sigma"] == 4
        assert vs.loc[(ckpt, "react_p99"), ["better_2sigma", "worse_2sigma"]].tolist() == [0, 0]
    assert vs.loc[("dice_densenet_cifar10", "react_p99"), "better"] == 4
    assert vs.loc[("odin_densenet10", "react_p99"), "better"] == 0
    for ckpt in ("odin_densenet100", "dice_densenet_cifar100"):
        assert all(vs.loc[(ckpt, f"react_p{p}"), "better"] == 4 for p in (90, 95, 99))


def test_fit_size_page_sentences_match_the_stored_rows() -> None:
    """oodbench/conf/paper/fit_size_cifar10.md's reading, recounted from the page's CSV (mean AUROC, natural sets)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fsf", REPO_ROOT / "scripts" / "fit_size_figure.py")
    fsf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fsf)
    c = fsf.curves(pd.read_csv(REPO_ROOT / "results" / "tables" / "fit_size_cifar10.csv"))
    auc = c.set_index(["checkpoint", "method", "n"]).auroc
    gaps = {(k, m, n): auc[k, m, 5085] - auc[k, m, n] for k, m, n in auc.index}
    ckpts = ("odin_densenet10", "dice_densenet_cifar10")
    assert sorted(round(gaps[k, "knn", 500]) for k in ckpts) == [12, 23]
    assert sorted(round(gaps[k, "knn", 250]) for k in ckpts) == [45, 64] and auc["odin_densenet10", "knn", 250] < 50
    assert sorted(round(gaps[k, "mahalanobis", 250]) for k in ckpts) == [7, 19]
    assert all(abs(gaps[k, "mahalanobis", n]) < 1 for k in ckpts for n in (1000, 2000))
    assert all(abs(gaps[k, "vim", n]) < 1 for k in ckpts for n in (500, 1000, 2000))
    assert all(auc[k, "react"].max() - auc[k, "react"].min() < 0.5 for k in ckpts)


def test_odin_decoder_and_crop_sentences_match_the_stored_rows() -> None:
    """oodbench/conf/paper/odin_table2.md's decoder and TinyImageNet (crop) readings, recounted from the pages' CSVs."""
    tables = REPO_ROOT / "results" / "tables"
    base = pd.read_csv(tables / "odin_table2.csv")
    base = base[(base.status == "ok") & (base.method == "msp")]
    everything = pd.read_csv(tables / "odin_table2.csv")
    j9 = pd.read_csv(tables / "odin_table2_libjpeg9.csv")
    j9 = j9[(j9.status == "ok") & (j9.id == "cifar100")]
    sets = ["isun", "lsun_resize", "tin_resize"]
    pil = base[(base.id == "cifar100") & base.ood.isin(sets)]
    j9_msp, j9_odin = j9[j9.method == "msp"], j9[j9.method == "odin"]
    assert len(pil) == 15 and pil.flag.notna().sum() == 6 and len(j9_msp) == 15 and j9_msp.flag.isna().all()
    auroc = pil[pil.metric == "auroc"].set_index("ood")
    assert sorted(auroc.delta.round(1)) == [-2.2, -1.8, -1.3]
    assert sorted(pil[pil.metric == "fpr95"].delta.round(1)) == [4.2, 4.7, 5.3]
    assert j9_msp[j9_msp.metric == "auroc"].set_index("ood").ours.round(1).to_dict() == {
        "isun": 69.5, "lsun_resize": 70.8, "tin_resize": 71.6}
    # ODIN (T = 1000, ε): 9b puts all 15 CIFAR-100 cells within noise; 10 of them are † with Pillow
    pil_odin = everything.query("status == 'ok' and method == 'odin' and id == 'cifar100'")
    pil_odin = pil_odin[pil_odin.ood.isin(sets)]
    assert len(pil_odin) == 15 and pil_odin.flag.notna().sum() == 10
    assert len(j9_odin) == 15 and j9_odin.flag.isna().all()
    order = lambda df: [round(df[df.metric == "auroc"].set_index("ood").loc[s, c], 1) for s in sets  # noqa: E731
                        for c in ("ours", "published")]
    assert order(j9_odin) == [83.6, 84.0, 85.0, 85.3, 84.8, 85.0]
    assert [v for i, v in enumerate(order(pil_odin)) if i % 2 == 0] == [81.8, 82.9, 83.4]
    # CIFAR-10 baseline: within noise with either decoder
    c10 = pd.read_csv(tables / "odin_table2_libjpeg9.csv").query(
        "status == 'ok' and id == 'cifar10' and method == 'msp'")
    pil_c10 = base[(base.id == "cifar10") & base.ood.isin(sets)]
    assert len(c10) == 15 and c10.flag.isna().all() and pil_c10.flag.isna().all()
    assert order(c10) == [95.2, 94.8, 95.9, 95.4, 94.5, 94.1]
    assert [v for i, v in enumerate(order(pil_c10)) if i % 2 == 0] == [95.1, 95.8, 94.4]
    c10_odin = pd.read_csv(tables / "odin_table2_libjpeg9.csv").query(
        "status == 'ok' and id == 'cifar10' and method == 'odin'")
    pil_c10_odin = everything.query("status == 'ok' and method == 'odin' and id == 'cifar10'")
    pil_c10_odin = pil_c10_odin[pil_c10_odin.ood.isin(sets)]
    assert len(c10_odin) == 15 and c10_odin.flag.isna().all() and pil_c10_odin.flag.isna().all()
    assert order(c10_odin) == [99.0, 98.8, 99.3, 99.2, 98.7, 98.5]
    assert [v for i, v in enumerate(order(pil_c10_odin)) if i % 2 == 0] == [98.9, 99.3, 98.6]
    # TinyImageNet (crop): crops stored as JPEG (baseline and ODIN), and crops re-drawn with seed 1
    crop = pd.read_csv(tables / "odin_table2_tincrop_jpeg.csv").query("status == 'ok' and metric == 'auroc'")
    crop = crop.set_index(["id", "method"]).ours.round(1).to_dict()
    assert crop == {("cifar10", "msp"): 94.3, ("cifar100", "msp"): 71.0, ("cifar10", "odin"): 97.9,
                    ("cifar100", "odin"): 84.4}
    tin = everything.query("status == 'ok' and ood == 'tin_crop'").set_index(["id", "method", "metric"])
    raw = tin.xs("auroc", level="metric").ours.round(1).to_dict()
    assert raw == {("cifar10", "msp"): 94.1, ("cifar10", "odin"): 97.6, ("cifar100", "msp"): 74.7,
                   ("cifar100", "odin"): 86.9}
    assert sorted(-tin.xs("auroc", level="metric").delta.round(1)) == [1.2, 1.5, 6.5, 7.4]
    seed1 = pd.read_csv(tables / "odin_table2_tincrop_seed.csv").query("status == 'ok'")
    seed1 = seed1.set_index(["id", "method", "metric"])
    moved = (seed1.ours - tin.ours).abs()
    assert len(moved) == 20 and moved.max() <= 0.5 and round(moved.xs("auroc", level="metric").max(), 2) <= 0.07
    assert seed1.flag.notna().sum() == tin.flag.notna().sum() == 18
    assert set(seed1[seed1.flag.notna()].index) == set(tin[tin.flag.notna()].index)
    # CIFAR-10 baseline FPR95: 4.7-8.8 below the paper on five sets, 2.8 above on TinyImageNet (crop), all within 2σ
    fpr = base.query("id == 'cifar10' and metric == 'fpr95'").set_index("ood")
    assert fpr.delta.round(1).to_dict() == {"tin_crop": 2.8, "tin_resize": -4.8, "lsun_resize": -4.8, "isun": -4.7,
                                            "uniform": -8.8, "gaussian": -5.7}
    assert fpr.flag.isna().all() and (round(fpr.noise.min(), 1), round(fpr.noise.max(), 1)) == (5.9, 10.2)


def test_mahalanobis_decoder_sentence_matches_the_stored_rows() -> None:
    tables = REPO_ROOT / "results" / "tables"
    pil = pd.read_csv(tables / "mahalanobis_table2.csv").query(
        "status == 'ok' and id == 'cifar100' and ood == 'lsun_resize' and method == 'Baseline (MSP)'")
    j9 = pd.read_csv(tables / "mahalanobis_table2_libjpeg9.csv").query("status == 'ok' and ood == 'lsun_resize'")
    assert pil.set_index("metric").ours.round(1)[["tnr95", "auroc"]].tolist() == [11.3, 66.7]
    base = j9[j9.method == "Baseline (MSP)"].set_index("metric")
    assert base.ours.round(1)[["tnr95", "auroc"]].tolist() == [13.8, 68.8]
    assert base.published[["tnr95", "auroc"]].tolist() == [16.7, 70.8]
    odin = j9[j9.method == "ODIN"].set_index("metric")
    assert odin.ours.round(1)[["tnr95", "auroc"]].tolist() == [38.5, 84.3]
    assert odin.published[["tnr95", "auroc"]].tolist() == [41.2, 85.5]
    pil_odin = pd.read_csv(tables / "mahalanobis_table2.csv").query(
        "status == 'ok' and id == 'cifar100' and ood == 'lsun_resize' and method == 'ODIN'").set_index("metric")
    assert pil_odin.ours.round(1)[["tnr95", "auroc"]].tolist() == [30.9, 82.2]
    every = pd.read_csv(tables / "mahalanobis_table2_libjpeg9.csv").query("status == 'ok'")
    assert len(every) == 12 and every.flag.isna().all()


def test_mahalanobis_covariance_sentences_match_the_stored_rows() -> None:
    """oodbench/conf/paper/mahalanobis_covariance.md's reading, recounted from the pages' CSVs."""
    tables = REPO_ROOT / "results" / "tables"
    df = pd.read_csv(tables / "mahalanobis_covariance.csv")
    vs = df[df.get("reference") == "mahalanobis"].set_index(["checkpoint", "metric"])
    cols = ["better", "better_2sigma", "worse_2sigma"]
    assert vs.loc[("odin_densenet10", "auroc"), cols].tolist() == [0, 0, 2]
    assert vs.loc[("odin_densenet10", "fpr95"), cols].tolist() == [0, 0, 4]
    assert vs.loc[("odin_densenet100", "auroc"), cols].tolist() == [4, 4, 0]
    assert vs.loc[("odin_densenet100", "fpr95"), "better"] == 4
    assert round(vs.loc[("odin_densenet10", "auroc"), "mean_delta"], 1) == -1.3
    assert round(vs.loc[("odin_densenet10", "fpr95"), "mean_delta"], 1) == -15.7
    assert round(vs.loc[("odin_densenet100", "auroc"), "mean_delta"], 1) == 3.0
    assert round(vs.loc[("odin_densenet100", "fpr95"), "mean_delta"], 1) == 8.4
    for ckpt in ("dice_densenet_cifar10", "dice_densenet_cifar100"):
        assert (vs.loc[ckpt, "mean_delta"] == 0).all()
    ph = pd.read_csv(tables / "posthoc_cifar.csv").query(
        "checkpoint == 'odin_densenet10' and detector == 'mahalanobis' and ood == 'isun'").set_index("metric")
    assert round(ph.loc["auroc", "ours"], 1) == 96.0 and round(ph.loc["fpr95", "ours"], 1) == 18.2


def _leaderboard_cifar10() -> pd.DataFrame:
    board = pd.read_csv(REPO_ROOT / "results" / "paper" / "openood_v15_leaderboard.csv")
    return board[board.id_dataset == "CIFAR-10"]


def test_openood_page_lists_every_leaderboard_cifar10_row(tmp_path: Path) -> None:
    """Every CIFAR-10 row of the leaderboard CSV is on the page (each block), ours beside it or "not run: reason";
    ours near-OOD = the mean of the per-set values over CIFAR-100 and the TIN stand-in, no Δ."""
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "openood_v15_leaderboard.csv").write_bytes(
        (REPO_ROOT / "results" / "paper" / "openood_v15_leaderboard.csv").read_bytes())
    rows = [{**run_row(s, "msp", auroc=a), "fpr95_oodpos": f, "fpr95_oodpos_std": None}
            for s, a, f in (("cifar100", 0.90, 0.40), ("tin_near_c10", 0.80, 0.60))]
    store(tmp_path, "openood_v15", rows, "arch.weights=odin", "detector=msp")
    df, md, _ = engine.build("openood_v15", tmp_path)
    board = _leaderboard_cifar10()
    assert len(board) == 20 and set(board.method.str.extract(r"postprocessor=([^;]+)")[0]) == {
        "MSP", "ODIN", "MDS", "MDSEns", "EBO", "ReAct", "DICE", "ASH", "MCD"}
    first = df[df.metric == "openood_auroc"]
    assert sorted(zip(first.method, first.published)) == sorted(zip(board.method, board.auroc))
    for block in (df[df.ours_checkpoint.isna()], df[df.ours_checkpoint == "dice_densenet_cifar10"]):
        shown = block.drop_duplicates(["split", "method"])
        assert len(shown) == 20 and set(shown.method) == set(board.method)
        assert all(s == "ok" or s.startswith("not run") for s in shown.status)
    assert set(df[df.split == "far-OOD"].status) == {
        "not run: MNIST, SVHN, Textures, Places365 (OpenOOD's far-OOD sets) not available here"}
    msp = df[(df.split == "near-OOD") & df.ours_checkpoint.isna() & (df.method.str.contains("CrossEntropy; "
                                                                                             "postprocessor=MSP;"))]
    msp = msp.set_index("metric")
    assert msp.loc["auroc", "ours"] == pytest.approx(85.0) and msp.loc["fpr95_oodpos", "ours"] == pytest.approx(50.0)
    assert msp.loc["openood_auroc", "published"] == pytest.approx(88.03) and pd.isna(msp.loc["auroc", "delta"])
    assert msp.loc["openood_acc", "published"] == pytest.approx(95.06) and msp.loc["id_acc", "ours"] == 95.0
    assert set(msp.status) == {"ok"} and layout.compared(df).empty  # side by side: nothing compared, nothing flagged
    oe = df[df.method.str.startswith("training=OE") & (df.split == "near-OOD")]
    assert set(oe.status) == {"not run: training-time method (Outlier Exposure); the OE fine-tune here "
                              "(training_cifar10) used the Tiny-ImageNet pool that the TIN stand-in is drawn from as "
                              "its outliers, so it cannot be tested on it"}
    assert "| near-OOD | CrossEntropy | MSP | msp | 88.03 | 0.25 | 85.0 | 50.0 | 95.06 | 95.0 | ok |" in md
