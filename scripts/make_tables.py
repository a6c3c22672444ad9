"""Rebuild every paper table from stored results: ``make tables`` (seconds; never runs a model).

Writes ``results/tables/<table>.md``, ``.csv`` and ``.tex``; running it twice gives byte-identical files. A table
whose published-numbers CSV is missing under ``<results>/paper/`` is skipped with a note.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this checkout's oodbench, not another install

import argparse
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from oodbench.cli import fail
from oodbench.errors import OodbenchError
from oodbench.paths import REPO_ROOT, resolve
from oodbench.runner.provenance import write_csv
from oodbench.tables import (
    ash_cifar,
    energy_table1,
    layout,
    mahalanobis,
    mcd,
    msp,
    odin_table2,
    posthoc_cifar,
    react_imagenet,
    spec,
    training_cifar10,
)

Builder = Callable[[Path, Path], tuple[pd.DataFrame, str]]

# table name -> (builder, published numbers in results/paper/ (None: our own table), stored runs in results/runs/).
# Builders that need more than one source read the siblings of these paths (see each module's docstring).
TABLES: dict[str, tuple[Builder, str | None, str]] = {
    "odin_table2": (odin_table2.build, "odin_liang2018.csv", "odin_table2"),
    "energy_table1": (energy_table1.build, "energy_liu2020.csv", "posthoc_cifar"),
    "ash_cifar": (ash_cifar.build, "ash_djurisic2023.csv", "posthoc_cifar"),
    "mahalanobis": (mahalanobis.build, "seed_tables.csv", "posthoc_cifar"),
    "msp": (msp.build, "msp_hendrycks2017.csv", "posthoc_cifar"),
    "mcd": (mcd.build, "mcd_yu2019.csv", "training_cifar10"),
    "react_imagenet": (react_imagenet.build, "react_sun2021.csv", "react_imagenet"),
    "posthoc_cifar": (posthoc_cifar.build, None, "posthoc_cifar"),
    "training_cifar10": (training_cifar10.build, None, "training_cifar10"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=resolve("results"),
                    help="results root (default: OODBENCH_RESULTS, else the repo's results/)")
    ap.add_argument("--only", nargs="*", help="build only these tables")
    args = ap.parse_args()
    out = args.results / "tables"
    out.mkdir(parents=True, exist_ok=True)
    specs = {p.stem: p for p in sorted((REPO_ROOT / "configs" / "paper").glob("*.yaml"))}
    for name, path in specs.items():  # tables declared as data (configs/paper/<name>.yaml): one engine
        if args.only and name not in args.only:
            continue
        published = args.results / "paper" / str(spec.load_spec(path).table.published)
        if not published.is_file():
            print(f"skipped {name}: no published numbers at {published}")
            continue
        _write(out, name, *spec.build(path, args.results))
    for name, (builder, paper, runs) in TABLES.items():
        if args.only and name not in args.only:
            continue
        paper_csv = args.results / "paper" / paper if paper else None
        if paper_csv is not None and not paper_csv.is_file():
            print(f"skipped {name}: no published numbers at {paper_csv}")
            continue
        _write(out, name, *builder(paper_csv, args.results / "runs" / runs))


def _write(out: Path, name: str, df: pd.DataFrame, md: str) -> None:
    write_csv(df, out / f"{name}.csv")
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.tex").write_text(layout.markdown_to_latex(md))
    print(f"wrote {out / name}.md ({len(df)} cells)")


if __name__ == "__main__":
    try:
        main()
    except OodbenchError as err:
        fail(str(err))
