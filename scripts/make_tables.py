"""Rebuild every paper table from stored results: ``make tables`` (seconds; never runs a model).

Writes ``results/tables/<table>.md`` and ``.csv``; running it twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from oodbench.paths import REPO_ROOT
from oodbench.runner.provenance import write_csv
from oodbench.tables import odin_table2

# table name -> (builder, published numbers, stored runs)
TABLES: dict[str, tuple[Callable[[Path, Path], tuple[pd.DataFrame, str]], str, str]] = {
    "odin_table2": (odin_table2.build, "odin_liang2018.csv", "odin_table2"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=REPO_ROOT / "results")
    args = ap.parse_args()
    out = args.results / "tables"
    out.mkdir(parents=True, exist_ok=True)
    for name, (builder, paper, runs) in TABLES.items():
        df, md = builder(args.results / "paper" / paper, args.results / "runs" / runs)
        write_csv(df, out / f"{name}.csv")
        (out / f"{name}.md").write_text(md)
        print(f"wrote {out / name}.md ({len(df)} cells)")


if __name__ == "__main__":
    main()
