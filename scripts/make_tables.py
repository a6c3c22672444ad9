"""Rebuild every paper page from its spec and the stored rows: ``make tables`` (never runs a model).

Each ``configs/paper/<name>.yaml`` is rendered by one engine (``oodbench/tables/engine.py``) into
``<results>/tables/<name>.md``, ``.csv`` and ``.tex``; running it twice gives byte-identical files. ``<results>`` is
``--results``, else ``$OODBENCH_RESULTS``, else ``results/``; the counts block of ``<results>/README.md`` is
rewritten from the pages (all pages only, not with ``--only``). A page whose published-numbers CSV is missing is
skipped with a note; an unreadable stored row file stops with one line naming it (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's oodbench, not an installed one

from oodbench.cli import fail  # noqa: E402
from oodbench.errors import OodbenchError  # noqa: E402
from oodbench.paths import resolve  # noqa: E402
from oodbench.runner.provenance import write_csv  # noqa: E402
from oodbench.tables import chance, engine, index, layout, significance  # noqa: E402
from oodbench.tables.cells import CONFIG_DIR, CorruptRows  # noqa: E402


def missing_published(spec: dict, results: Path) -> list[Path]:
    return [results / "paper" / src["csv"] for b in spec["blocks"] for src in b.get("published", [])
            if not (results / "paper" / src["csv"]).is_file()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=None, help="results dir (default: $OODBENCH_RESULTS or results/)")
    ap.add_argument("--configs", type=Path, default=CONFIG_DIR, help="config dir holding paper/<name>.yaml")
    ap.add_argument("--only", nargs="*", help="build only these pages")
    args = ap.parse_args(argv)
    specs = engine.spec_names(args.configs)
    if unknown := sorted(set(args.only or ()) - set(specs)):
        fail(f"no paper spec {', '.join(unknown)} in {args.configs / 'paper'}; choose from: {', '.join(specs)}")
    results = resolve("results", args.results)
    out = results / "tables"
    pages = {}
    for name in specs:
        if args.only and name not in args.only:
            continue
        try:
            spec = engine.load_spec(name, args.configs)
        except Exception as err:  # noqa: BLE001 — a malformed YAML file: one line, not a traceback
            fail(f"cannot read {engine.spec_path(name, args.configs)}: {str(err).splitlines()[0]}")
        if missing := missing_published(spec, results):
            print(f"skipped {name}: no published numbers at {missing[0]}")
            continue
        try:
            rows = engine.spec_rows(name, spec, results, args.configs)
            if refreshed := significance.refresh(name, spec, rows, results, resolve("cache")):
                print(refreshed)
            df, md, _ = engine.build(name, results, args.configs)
            if chance.refresh(name, df, rows, results, resolve("cache")):  # the page's chance-flag simulation
                df, md, _ = engine.build(name, results, args.configs)
                print(f"chance flags {name}: {chance.text(chance.stored(results, name, df), len(layout.compared(df)))}")
        except CorruptRows as err:
            fail(f"{err.args[1]}: {err.args[0]}; restore it (git checkout -- {err.args[1]}) or delete it and rerun "
                 f"`python run.py +paper={name}`")
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_csv(df, out / f"{name}.csv")
            for suffix, text in ((".md", md), (".tex", layout.markdown_to_latex(md))):
                target = out / f"{name}{suffix}"
                tmp = target.with_suffix(suffix + ".tmp")
                tmp.write_text(text)
                tmp.replace(target)
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
