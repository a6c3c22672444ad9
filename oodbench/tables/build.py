"""Rebuild every paper page from its spec and the stored rows: ``oodbench tables`` / ``make tables`` (never runs a
model).

Each ``oodbench/conf/paper/<name>.yaml`` is rendered by one engine (:mod:`oodbench.tables.engine`) into
``<results>/tables/<name>.md``, ``.csv`` and ``.tex``; running it twice gives byte-identical files. Per page: build,
refresh the significance records and chance-flag simulation when the rows they digest changed, rebuild if the
simulation changed. ``<results>`` is ``--results``, else ``$OODBENCH_RESULTS``, else ``results/``, and must exist;
the counts block of ``<results>/README.md`` is rewritten from the pages (all pages only, not with ``--only``). A page
whose published-numbers CSV is missing is skipped with a note; a malformed spec or an unreadable stored row file
stops with one line naming it (exit 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from oodbench.errors import OodbenchError, fail
from oodbench.paths import CONFIG_DIR, resolve
from oodbench.store import CorruptRows, write_csv
from oodbench.tables import chance, engine, index, layout, significance


def missing_published(spec: dict[str, Any], results: Path) -> list[Path]:
    return [results / "paper" / src["csv"] for b in spec["blocks"] for src in b.get("published", [])
            if not (results / "paper" / src["csv"]).is_file()]


def build_page(name: str, spec: dict[str, Any], results: Path, configs: Path, cache: Path) -> tuple[Any, str]:
    """One page: rows → significance refresh → page → chance refresh (→ page again if it changed)."""
    rows = engine.spec_rows(name, spec, results, configs)
    if refreshed := significance.refresh(name, spec, rows, results, cache):
        print(refreshed)
    df, md, _ = engine.build(name, results, configs)
    if chance.refresh(name, df, rows, results, cache):  # the page's chance-flag simulation
        df, md, _ = engine.build(name, results, configs)
        print(f"chance flags {name}: {chance.text(chance.stored(results, name, df), len(layout.compared(df)))}")
    return df, md


def write_page(out: Path, name: str, df: Any, md: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(df, out / f"{name}.csv")
    for suffix, text in ((".md", md), (".tex", layout.markdown_to_latex(md))):
        target = out / f"{name}{suffix}"
        tmp = target.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(target)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="oodbench tables", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=None, help="results dir (default: $OODBENCH_RESULTS or results/)")
    ap.add_argument("--configs", type=Path, default=CONFIG_DIR, help="config dir holding paper/<name>.yaml")
    ap.add_argument("--only", nargs="*", help="build only these pages")
    args = ap.parse_args(argv)
    specs = engine.spec_names(args.configs)
    if not specs:
        fail(f"no paper spec in {args.configs / 'paper'}; point --configs at a config dir with paper/<name>.yaml")
    if unknown := sorted(set(args.only or ()) - set(specs)):
        fail(f"no paper spec {', '.join(unknown)} in {args.configs / 'paper'}; choose from: {', '.join(specs)}")
    results = resolve("results", args.results)
    if not results.is_dir():
        what = "is not a directory" if results.exists() else "does not exist"
        fail(f"results dir {results} {what}; give --results (or OODBENCH_RESULTS) a directory holding "
             "runs/ and paper/")
    out, cache, pages = results / "tables", resolve("cache"), {}
    for name in specs:
        if args.only and name not in args.only:
            continue
        try:
            spec = engine.load_spec(name, args.configs)
            if missing := missing_published(spec, results):
                print(f"skipped {name}: no published numbers at {missing[0]}")
                continue
            df, md = build_page(name, spec, results, args.configs, cache)
        except OodbenchError as err:
            fail(str(err))
        except CorruptRows as err:
            fail(f"{err.args[1]}: {err.args[0]}; restore it (git checkout -- {err.args[1]}) or delete it and rerun "
                 f"`python run.py +paper={name}`")
        try:
            write_page(out, name, df, md)
        except (OSError, OodbenchError) as err:
            fail(f"cannot write {out}: {err}")
        print(f"wrote {out / name}.md ({len(df)} cells)")
        pages[name] = (spec, df)
    if not args.only:  # the counts of results/README.md, from the pages just written
        readme = results / "README.md"
        text = readme.read_text() if readme.is_file() else "# Results\n"
        try:
            readme.write_text(index.replace_block(text, index.index_lines(pages)))
        except OSError as err:
            fail(f"cannot write {readme}: {err}")
        print(f"wrote the counts of {readme}")


if __name__ == "__main__":
    main()
