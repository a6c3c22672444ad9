"""A new paper is one YAML + one CSV (+ notes): the spec engine renders a toy paper's page from data alone, and
every spec under configs/paper is a preset whose runs are the runs its page reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_tables import PAPER_COLS, paper_row, run_row

from oodbench.paths import REPO_ROOT
from oodbench.tables import spec

TOY = """\
# @package _global_
result_set: toy
hydra: {mode: MULTIRUN, sweeper: {params: {detector: "msp,energy"}}}
table:
  title: Toy paper Table 1
  published: toy.csv
  filter: {table: {startswith: "Table 1"}}
  keys: {ood_dataset: OOD, method: Method}
  match:
    id_dataset: {id_dataset: {CIFAR-10: cifar10}}
    ood_dataset: {ood_dataset: {iSUN: isun, Gaussian: gaussian}}
    detector: {method: {Baseline: msp, Energy: energy}}
  not_run:
    - when: {ood_dataset: SVHN}
      reason: "not run: SVHN not available here"
  metrics:
    tnr95: {label: "TNR@95", ours: fpr95, complement: true}
    auroc: {label: AUROC}
    detection_error: {label: "Det. acc", ours: detection_error, complement: true}
  notes: toy.md
"""


def test_a_toy_paper_is_one_yaml_and_one_csv(tmp_path: Path):
    specs, results = tmp_path / "configs" / "paper", tmp_path / "results"
    specs.mkdir(parents=True)
    (specs / "toy.yaml").write_text(TOY)
    (specs / "toy.md").write_text("## Notes\n\nProse from the notes file.")
    (results / "paper").mkdir(parents=True)
    pd.DataFrame([
        paper_row(table="Table 1", id_dataset="CIFAR-10", ood_dataset="iSUN", method="Baseline", tnr95=60.0,
                  auroc=95.0, detection_error="acc:90.0"),
        paper_row(table="Table 1", id_dataset="CIFAR-10", ood_dataset="iSUN", method="Energy", tnr95=80.0,
                  auroc=97.0, detection_error="acc:93.0"),
        paper_row(table="Table 1", id_dataset="CIFAR-10", ood_dataset="SVHN", method="Energy", auroc=90.0),
        paper_row(table="Table 1", id_dataset="CIFAR-10", ood_dataset="Gaussian", method="Energy", auroc=99.0),
        paper_row(table="Table 9", id_dataset="CIFAR-10", ood_dataset="iSUN", method="Energy", auroc=1.0),
    ], columns=PAPER_COLS).to_csv(results / "paper" / "toy.csv", index=False)
    (results / "runs" / "toy").mkdir(parents=True)
    pd.DataFrame([run_row("isun", "msp", fpr95=0.40, auroc=0.951, detection_error=0.10),
                  run_row("isun", "energy", fpr95=0.10, auroc=0.90, detection_error=0.07)]).to_csv(
        results / "runs" / "toy" / "a.csv", index=False)
    df, md = spec.build(specs / "toy.yaml", results)
    assert len(df) == 4 * 3  # four Table 1 rows (Table 9 filtered out) x three metrics
    isun = df[(df.ood_dataset == "iSUN")].set_index(["method", "metric"])
    assert isun.loc[("Baseline", "tnr95"), "ours"] == pytest.approx(60.0)  # TNR = 100 - FPR
    assert isun.loc[("Baseline", "detection_error"), "published"] == pytest.approx(90.0)  # acc: prefix read
    assert isun.loc[("Energy", "auroc"), "flag"] == "†"  # 90.0 vs 97.0 with σ = 1 point
    assert "| SVHN | Energy | not run: SVHN not available here |" in md
    assert "| Gaussian | Energy | not run yet (python run.py +paper=toy) |" in md
    assert "Prose from the notes file." in md and md.startswith("# Toy paper Table 1")


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs" / "paper").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_runs_a_spec_produces_are_the_runs_its_page_reads(path: Path):
    """Compose ``+paper=<name>``: its sweep's cells store rows in the folder the page reads, and every runnable
    published row maps onto one of those cells."""
    s = spec.load_spec(path)
    with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"+paper={path.stem}"], return_hydra_config=True)
    assert cfg.result_set == s.result_set
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    cells = {(i, d, o) for i in params.get("id", [cfg.id.name]) for d in params.get("detector", [])
             for o in cfg.ood}
    t = OmegaConf.to_container(s.table, resolve=True)
    paper = pd.read_csv(REPO_ROOT / "results" / "paper" / t["published"], dtype=str).fillna("")
    needed = set()
    for p in paper.to_dict("records"):
        if not spec._holds(p.get("table", ""), t["filter"]["table"]) or any(
                spec._matches(p, r["when"]) for r in t.get("not_run") or []):
            continue
        keys = spec._our_keys(p, t["match"])
        if keys:
            needed.add((keys["id_dataset"], keys["detector"], keys["ood_dataset"]))
    assert needed and needed <= cells, needed - cells


def test_make_tables_renders_every_spec(tmp_path: Path):
    env = dict(os.environ, OODBENCH_RESULTS=str(tmp_path), PYTHONPATH=str(REPO_ROOT))
    for sub in ("paper", "runs"):
        (tmp_path / sub).symlink_to(REPO_ROOT / "results" / sub)
    names = [p.stem for p in (REPO_ROOT / "configs" / "paper").glob("*.yaml")]
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "make_tables.py"), "--only", *names],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for n in names:
        committed = (REPO_ROOT / "results" / "tables" / f"{n}.md").read_text()
        assert (tmp_path / "tables" / f"{n}.md").read_text() == committed


def test_results_readme_counts_for_spec_pages_are_recounted_from_the_tables():
    """Every 'N of M cells within noise' the results README states for a spec page equals the page's CSV."""
    import re

    from oodbench.tables.layout import compared

    readme = (REPO_ROOT / "results" / "README.md").read_text()
    for path in (REPO_ROOT / "configs" / "paper").glob("*.yaml"):
        line = next((x for x in readme.splitlines() if f"tables/{path.stem}.md" in x), None)
        assert line is not None, f"results/README.md does not mention {path.stem}"
        m = re.search(r"(\d+) of (\d+) cells within noise", line)
        assert m, line
        cmp = compared(pd.read_csv(REPO_ROOT / "results" / "tables" / f"{path.stem}.csv",
                                   dtype={"flag": str}, keep_default_na=False, na_values=[""]))
        cmp = cmp.assign(flag=cmp.flag.fillna(""))
        assert (int(m.group(1)), int(m.group(2))) == (int((cmp.flag == "").sum()), len(cmp)), line
