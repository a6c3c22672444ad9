"""Paper specs (oodbench/conf/paper/*.yaml): the runs a spec's sweep produces are exactly the runs its page reads; a new
paper is one YAML + one CSV (+ notes); make_tables honours OODBENCH_RESULTS and stops on a corrupt stored CSV."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from oodbench.paths import CONFIG_DIR, REPO_ROOT
from oodbench.store import store as store_mod
from oodbench.tables import engine
from oodbench.tables.cells import grid_overrides

SPECS = engine.spec_names()
MAKE_TABLES = [sys.executable, str(REPO_ROOT / "scripts" / "make_tables.py")]


def sweep_jobs(spec: str) -> list[tuple[str, ...]]:
    """The jobs ``python run.py +paper=<spec>`` launches: Hydra's own sweep expansion of each grid (as the
    PaperSweeper does), duplicates once."""
    parser = OverridesParser.create()
    jobs: list[tuple[str, ...]] = []
    for grid in grid_overrides(engine.load_spec(spec)["cells"]):
        for job in BasicSweeper.split_arguments(parser.parse_overrides(grid), None)[0]:
            if tuple(job) not in jobs:
                jobs.append(tuple(job))
    return jobs


def test_every_existing_page_has_a_spec() -> None:
    assert {"odin_table2", "energy_table1", "mahalanobis", "msp", "mcd", "ash_cifar", "react_imagenet",
            "posthoc_cifar", "training_cifar10", "mahalanobis_table2"} <= set(SPECS)


@pytest.mark.parametrize("spec", SPECS)
def test_a_spec_reads_exactly_the_runs_its_sweep_writes(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = sweep_jobs(spec)
    read: list[Path] = []
    real = store_mod.read_rows
    monkeypatch.setattr(store_mod, "read_rows", lambda p: read.append(Path(p)) or real(p))
    _, _, cells = engine.build(spec, REPO_ROOT / "results")
    assert [c.overrides for c in cells] == jobs  # the page's cells are the sweep's jobs, in order
    composed = [c for c in cells if not c.error]
    for c in composed:  # each cell's rows live in its own result store, under the runner's run name
        assert c.store and c.path(REPO_ROOT / "results").parent == REPO_ROOT / "results" / "runs" / c.store
    assert read == [c.path(REPO_ROOT / "results") for c in composed if c.path(REPO_ROOT / "results").is_file()]


def test_the_posthoc_spec_names_the_stored_rows() -> None:
    """The committed post-hoc rows were run with 100 bootstrap resamples; the spec says so, so its run names hit.
    208 cells: 25 detectors × 4 checkpoints × (far-OOD cell, near-OOD cell),
    ASH-S at p = 90 on the two CIFAR-100 checkpoints and temperature scaling on three (far, near)."""
    cells = engine.build("posthoc_cifar", REPO_ROOT / "results")[2]
    names = {c.run_name for c in cells}
    stored = {p.stem for p in (REPO_ROOT / "results" / "runs" / "posthoc_cifar").glob("*.csv")}
    assert stored <= names and len(cells) == 208


def test_run_py_paper_sweeps_the_spec_cells(tmp_path: Path, shared_weights: Path) -> None:
    """``python run.py +paper=odin_table2`` launches the 4 cells (stored: nothing recomputed; serving a stored row
    checks the checkpoint's sha256, so the published weights must be there)."""
    out = subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), "+paper=odin_table2",
                          f"hydra.sweep.dir={tmp_path}"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("stored result, nothing recomputed") == 4


TOY_SPEC = """\
# @package _global_
defaults:
  - override /ood: [isun]
result_set: toy_store
hydra:
  mode: MULTIRUN
  sweeper:
    _target_: hydra_plugins.oodbench_paper.paper_sweeper.PaperSweeper
paper:
  title: Toy paper — Table 9
  cells:
    - {id: cifar10, detector: "msp,energy"}
  blocks:
    - kind: compare
      published: [{csv: toy_2024.csv, where: {table: "^Table 9"}}]
      map:
        our_det: {from: method, values: {Baseline: msp, Energy: energy}}
        our_ood: {from: ood_dataset, values: OOD_DATASETS}
      match: {id_dataset: cifar10, ood_dataset: "{our_ood}", detector: "{our_det}"}
      keys: {ood: "{our_ood}", method: "{method}"}
      show: {OOD: "{ood_dataset}", Method: "{method}"}
      label: "{ood} {method}"
      metrics:
        tnr95: {label: TNR95, ours: fpr95, complement: true}
        auroc: AUROC
      not_run:
        - {where: {ood_dataset: "^SVHN$"}, status: "not run: SVHN not available here"}
"""


@pytest.fixture()
def toy(tmp_path: Path) -> tuple[Path, Path]:
    """A config dir with one new spec (toy.yaml + toy.md) and a results dir with its CSV and one stored cell."""
    configs, results = tmp_path / "configs", tmp_path / "results"
    shutil.copytree(CONFIG_DIR, configs)
    for p in (configs / "paper").iterdir():
        p.unlink()
    (configs / "paper" / "toy.yaml").write_text(TOY_SPEC)
    (configs / "paper" / "toy.md").write_text("Toy protocol: prose from the notes file.\n")
    (results / "paper").mkdir(parents=True)
    base = {"paper": "toy2024", "id_dataset": "CIFAR-10", "arch": "DenseNet", "source": "made up"}
    pd.DataFrame([{**base, "table": "Table 9", "ood_dataset": "iSUN", "method": "Baseline", "tnr95": 60.0,
                   "auroc": 95.0},
                  {**base, "table": "Table 9", "ood_dataset": "iSUN", "method": "Energy", "tnr95": 80.0,
                   "auroc": 97.0},
                  {**base, "table": "Table 9", "ood_dataset": "SVHN", "method": "Energy", "tnr95": 70.0},
                  {**base, "table": "Table 8", "ood_dataset": "iSUN", "method": "Energy", "tnr95": 1.0}]
                 ).to_csv(results / "paper" / "toy_2024.csv", index=False)
    cell = next(c for c in engine.build("toy", results, configs)[2] if "detector=msp" in c.overrides)
    assert cell.store == "toy_store" and cell.run_name.startswith("cifar10-odin_densenet10-msp-default-")
    cell.path(results).parent.mkdir(parents=True)
    pd.DataFrame([{"experiment": "toy_store", "id_dataset": "cifar10", "arch": "densenet100",
                   "checkpoint": "odin_densenet10", "checkpoint_sha256": "cd" * 32, "detector": "msp",
                   "id_source": "toy", "n_id": 1000, "id_acc": 0.9, "git_commit": "abc", "ood_dataset": "isun",
                   "status": "ok", "n_ood": 500, "fpr95": 0.35, "fpr95_std": 0.01, "auroc": 0.951,
                   "auroc_std": 0.002}]).to_csv(cell.path(results), index=False)
    return configs, results


def test_a_new_paper_is_one_yaml_and_one_csv(toy: tuple[Path, Path]) -> None:
    configs, results = toy
    cmd = [*MAKE_TABLES, "--configs", str(configs), "--results", str(results)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    assert first.returncode == 0, first.stderr
    md = (results / "tables" / "toy.md").read_text()
    df = pd.read_csv(results / "tables" / "toy.csv")
    tnr = df[(df.method == "Baseline") & (df.metric == "tnr95")].iloc[0]
    assert tnr.ours == pytest.approx(65.0) and tnr.published == 60.0 and tnr.delta == pytest.approx(5.0)
    assert tnr.flag == "†"  # |5.0| > 2·hypot(1.0, 0.05)
    auroc = df[(df.method == "Baseline") & (df.metric == "auroc")].iloc[0]
    assert auroc.delta == pytest.approx(0.1) and pd.isna(auroc.flag)
    assert set(df[df.ood == "svhn"].status) == {"not run: SVHN not available here"}
    assert set(df[(df.method == "Energy") & (df.ood == "isun")].status) == {"not run yet (python run.py +paper=toy)"}
    assert len(df) == 3 * 2  # Table 8's row is filtered out
    assert "Toy protocol: prose from the notes file." in md and "65.0 / 60.0 (+5.0)†" in md
    assert "- `results/runs/toy_store/`: 1 of 2 cells stored." in md and "3 rows: 1 ok;" in md
    built = {p.name: p.read_bytes() for p in (results / "tables").iterdir()}
    assert set(built) == {"toy.md", "toy.csv", "toy.tex"}
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    assert again.returncode == 0 and {p.name: p.read_bytes() for p in (results / "tables").iterdir()} == built


def test_make_tables_honours_oodbench_results(toy: tuple[Path, Path]) -> None:
    configs, results = toy
    env = dict(os.environ, OODBENCH_RESULTS=str(results))
    out = subprocess.run([*MAKE_TABLES, "--configs", str(configs)], capture_output=True, text=True, env=env,
                         cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert (results / "tables" / "toy.md").is_file() and str(results / "tables" / "toy") in out.stdout


@pytest.mark.parametrize("damage", ["truncated", "text", "binary"])
def test_a_corrupt_stored_csv_is_one_line_and_exit_2(toy: tuple[Path, Path], damage: str) -> None:
    configs, results = toy
    stored = next((results / "runs" / "toy_store").glob("*.csv"))
    raw = stored.read_bytes()
    stored.write_bytes({"truncated": raw[: len(raw) - 12],
                        "text": raw.replace(b",0.951,", b",oops,"),
                        "binary": bytes(range(256)) * 4}[damage])
    out = subprocess.run([*MAKE_TABLES, "--configs", str(configs), "--results", str(results)], capture_output=True,
                         text=True, cwd=REPO_ROOT)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    line = out.stderr.strip()
    assert "\n" not in line and line.startswith("oodbench: error: ") and str(stored) in line
    assert "python run.py +paper=toy" in line
    assert not (results / "tables" / "toy.md").exists()


def test_unknown_page_is_one_line() -> None:
    out = subprocess.run([*MAKE_TABLES, "--only", "no_such_paper"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 2 and out.stderr.startswith("oodbench: error: no paper spec no_such_paper")


@pytest.mark.parametrize(("edit", "expected"), [
    (("      keys: {", "      kees: {"), "missing keys; unknown kees (allowed:"),
    (("      match: {", "      mach: {"), "unknown mach (allowed:"),
    (("    - kind: compare", "    - kind: comparison"), "kind 'comparison' is not a block kind; choose from compare"),
    (("        auroc: AUROC", "        auroc: {label: AUROC, our: auroc}"), "metrics.auroc: unknown our (allowed:"),
])
def test_a_malformed_spec_is_one_line_naming_the_allowed_keys(toy: tuple[Path, Path], edit: tuple[str, str],
                                                              expected: str) -> None:
    """Issue 19: a misspelt or missing key of a page block is one line (not a KeyError, not a silently dropped
    column)."""
    configs, results = toy
    spec = configs / "paper" / "toy.yaml"
    assert edit[0] in spec.read_text()
    spec.write_text(spec.read_text().replace(edit[0], edit[1], 1))
    out = subprocess.run([*MAKE_TABLES, "--configs", str(configs), "--results", str(results)], capture_output=True,
                         text=True, cwd=REPO_ROOT)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-1500:]
    line = out.stderr.strip()
    assert "\n" not in line and line.startswith("oodbench: error: oodbench/conf/paper/toy.yaml paper.blocks[0]")
    assert expected in line


def test_make_tables_refuses_a_missing_results_dir(tmp_path: Path) -> None:
    """Issue 19: ``make tables --results <missing>`` used to exit 0, create the dir and write empty pages."""
    missing = tmp_path / "no_such_results"
    out = subprocess.run([*MAKE_TABLES, "--results", str(missing)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 2 and out.stderr.strip().startswith("oodbench: error: results dir ")
    assert "\n" not in out.stderr.strip() and not missing.exists()


def test_a_cell_stored_under_another_config_is_named(toy: tuple[Path, Path]) -> None:
    """A cell whose stored neighbour differs in a protocol field does not silently read "not run yet": the page says
    which stored cell nearly matches and which fields differ."""
    configs, results = toy
    cells = engine.build("toy", results, configs)[2]
    energy = next(c for c in cells if "detector=energy" in c.overrides)
    stored = cells[0].path(results)
    other = energy.path(results).with_name(energy.run_name.rsplit("-", 1)[0] + "-00000000.csv")
    config = {**energy.identity, "protocol": {**energy.identity["protocol"], "bootstrap": 7}}
    pd.read_csv(stored).assign(detector="energy", config=json.dumps(config)).to_csv(other, index=False)
    md = engine.build("toy", results, configs)[1]
    assert f"{other.name}: protocol.bootstrap: 7 (stored) vs " in md
