"""One engine for every paper page: a spec (``oodbench/conf/paper/<name>.yaml``, key ``paper:``) → long-form CSV +
Markdown.

A spec declares its cells (the sweep ``python run.py +paper=<name>`` runs), the published numbers (CSVs under
``results/paper/`` with a row filter), how a published row maps onto our rows, the metrics compared, any
aggregation, and a notes file (``oodbench/conf/paper/<name>.md``) with the prose (above the tables; what follows a line
``<!-- after the tables -->`` goes below them). The engine reads exactly the stored rows
of those cells (:mod:`oodbench.tables.cells`) and renders the page from *blocks*, each one of :data:`BLOCKS`:

- ``compare``: one table row per published row (or per row declared in the spec): ours / published (Δ), 2σ noise
  flag, ``not run: <reason>``; optional ``mean_over`` aggregation (e.g. Energy Table 1's mean over OOD sets);
- ``grid``: our numbers only, (checkpoint, detector) × OOD set, the best of each column in bold — with
  ``significance: true``, only a significantly best cell in bold and the cells tied for best in italics
  (:mod:`oodbench.tables.significance`);
- ``stored_rows``: the stored rows themselves, grouped by how each checkpoint was made (declared in the spec);
- ``versus``: each detector against a reference detector on the same images: on how many sets it is better (and by
  more than 2σ), and its mean Δ — counts a page's prose can cite;
- ``python``: the escape hatch, ``hook: module:function`` (``function(block, ctx) -> (records, lines)``), for a
  genuinely new aggregation; named in the spec.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from oodbench.errors import OodbenchError
from oodbench.paths import CONFIG_DIR
from oodbench.store import Store
from oodbench.tables import chance, layout, names, significance
from oodbench.tables.cells import Cell, load_cells, spec_cells
from oodbench.tables.compare import cell, fmt_cell
from oodbench.tables.spec import validate

SPEC_DIR = "paper"
NOTES_AFTER = "<!-- after the tables -->"  # notes below this line go under the tables (e.g. reading the Δs)


@dataclass
class Context:
    """What every block of one page sees."""

    name: str
    spec: dict[str, Any]
    rows: pd.DataFrame          # the stored rows of the spec's cells, with a ``train_method`` column
    cells: list[Cell]
    results: Path
    missing: str                # status of a cell with no stored row


def spec_path(name: str, config_dir: Path = CONFIG_DIR) -> Path:
    return Path(config_dir) / SPEC_DIR / f"{name}.yaml"


def spec_names(config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir) / SPEC_DIR).glob("*.yaml"))


def load_spec(name: str, config_dir: Path = CONFIG_DIR) -> dict[str, Any]:
    """The ``paper:`` part of a spec file, unresolved (the runner's keys are not needed to render), checked against
    the schema (:func:`oodbench.tables.spec.validate`: one ``OodbenchError`` line for a missing or misspelt key)."""
    try:
        node = OmegaConf.load(spec_path(name, config_dir)).get("paper")
    except Exception as err:  # noqa: BLE001 — a malformed YAML file: one line
        raise OodbenchError(f"cannot read {spec_path(name, config_dir)}: {str(err).splitlines()[0]}") from None
    if node is None:
        raise OodbenchError(f"{spec_path(name, config_dir)} has no `paper:` key")
    return validate(OmegaConf.to_container(node, resolve=False), name)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- small helpers

def _plain(v: object) -> object:
    return None if isinstance(v, float) and math.isnan(v) else v


def fmt(template: str, row: dict[str, object]) -> str:
    """``"{id} {ood}"`` filled from ``row`` (missing or empty values → "")."""
    return re.sub(r"\{(\w+)\}", lambda m: "" if row.get(m.group(1)) is None else str(row[m.group(1)]), template)


def matches(where: dict[str, str] | None, row: dict[str, object]) -> bool:
    """Every ``column: regex`` of ``where`` matches the row's value (``re.match``; empty for a missing value)."""
    return all(re.match(str(rx), "" if row.get(k) is None else str(row[k])) for k, rx in (where or {}).items())


def _mapping(values: object) -> dict[str, object]:
    return getattr(names, values) if isinstance(values, str) else dict(values or {})  # type: ignore[arg-type]


def apply_map(spec_map: dict[str, dict[str, Any]], row: dict[str, object]) -> dict[str, object]:
    """New columns from published ones: ``{new: {from: col, values: {...} | NAME_IN_names.py, patterns: {regex:
    value}, default: template}}``; an unmapped value is kept unless ``default`` is given."""
    out = dict(row)
    for new, m in spec_map.items():
        src = out.get(m["from"])
        values, patterns = _mapping(m.get("values")), m.get("patterns") or {}
        if src in values:
            out[new] = values[src]  # type: ignore[index]
        elif (hit := next((m_.expand(v) for rx, v in patterns.items() if (m_ := re.search(rx, str(src)))),
                          None)) is not None:
            out[new] = hit
        else:
            out[new] = fmt(m["default"], out) if "default" in m else src
    return out


def published_rows(block: dict[str, Any], results: Path) -> list[dict[str, object]]:
    """The published rows of a block (every ``published`` CSV, filtered by ``where``), or its declared ``rows``."""
    if "rows" in block:
        return [dict(r) for r in block["rows"]]
    out = []
    for src in block.get("published", []):
        df = pd.read_csv(Path(results) / "paper" / src["csv"])
        out += [r for r in ({k: _plain(v) for k, v in rec.items()} for rec in df.to_dict("records"))
                if matches(src.get("where"), r)]
    return out


def metric_specs(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: label}`` or ``{name: {label, ours, complement, published, std}}`` → full entries. ``ours: null``: a
    published-only column, ``published: null``: an ours-only one (e.g. another network beside a leaderboard: side by
    side, no Δ, no flag)."""
    out = {}
    for m, v in metrics.items():
        v = {"label": v} if isinstance(v, str) else dict(v)
        out[m] = {"label": v.get("label", m), "ours": v.get("ours", m), "complement": bool(v.get("complement")),
                  "published": v.get("published", m), "std": v.get("std")}
    return out


def compare_row(ours: pd.Series | None, pub: dict[str, object], metrics: dict[str, dict[str, Any]]) -> dict:
    out = {}
    for m, s in metrics.items():
        value, std = layout.ours_pct(ours, s["ours"], s["complement"]) if s["ours"] is not None else (None, None)
        out[m] = cell(value, layout.published_value(pub.get(s["published"])), s["std"] if value is not None
                      and s["std"] is not None else std)
    return out


# ---------------------------------------------------------------------------------------------- blocks

def _aggregate(rows: pd.DataFrame, eq: dict[str, str], over: dict[str, Any], metrics: list[str]
               ) -> tuple[pd.Series | None, list[str]]:
    """``mean_over: {column, values, require: all | available}``: the mean row over the values found ok."""
    col, values = over["column"], list(over["values"])
    eq = {k: v for k, v in eq.items() if k != col}
    found = [v for v in values if layout.is_ok(layout.find(rows, **eq, **{col: v}))]
    if not found or (over.get("require", "all") == "all" and len(found) < len(values)):
        return None, found
    return layout.mean_row([layout.find(rows, **eq, **{col: v}) for v in found], metrics), found


def compare_block(block: dict[str, Any], ctx: Context) -> tuple[list[dict], list[str]]:
    metrics = metric_specs(block["metrics"])
    our_cols = list(dict.fromkeys(s["ours"] for s in metrics.values() if s["ours"] is not None))
    long, md = [], []
    for pub in published_rows(block, ctx.results):
        p = apply_map(block.get("map", {}), pub)
        rule = next((r for r in block.get("not_run", []) if matches(r.get("where"), p)), None)
        ours, status = None, fmt(rule["status"], p) if rule else ""
        if not rule:
            eq = {k: fmt(v, p) for k, v in block["match"].items()}
            over = block.get("mean_over")
            if over and matches(over.get("when"), p):
                ours, found = _aggregate(ctx.rows, eq, over, [c for c in our_cols if c != "id_acc"])
                missing = p.get("missing") or block.get("missing") or ctx.missing
                if not found and (block.get("missing_none") or p.get("missing_none")):
                    missing = p.get("missing_none") or block["missing_none"]
                status = "ok" if ours is not None else fmt(missing, {**p, "found_n": len(found),
                                                                       "found": ", ".join(found) or "none"})
                p["sets_averaged"] = ", ".join(found) if ours is not None else ""
            else:
                ours = layout.find(ctx.rows, **eq)
                status = layout.status_of(ours, str(p.get("missing") or block.get("missing") or ctx.missing),
                                          fmt(block.get("status_label", "{ood_dataset}"), p))
        ours = ours if status == "ok" else None
        cells = compare_row(ours, p, metrics)
        long += layout.records({k: fmt(v, p) for k, v in block["keys"].items()}, cells, status, ours,
                               {m: (s["ours"], s["complement"]) for m, s in metrics.items()})
        shown = [fmt(v, p) for v in block.get("show", {}).values()]
        texts = [layout.pct_text(c["published"], 2) if metrics[m]["ours"] is None else  # published only
                 fmt_cell(c).replace(" / —", "") if c["published"] is None and ("rows" in block or
                                                                               metrics[m]["published"] is None)
                 else fmt_cell(c) for m, c in cells.items()]
        md.append([*shown, *texts, status, layout.n_text(ours)])
    head = [*block.get("show", {}), *(s["label"] for s in metrics.values()), "Status", "n ID / OOD"]
    lines = _section(block) + layout.md_table(head, md)
    df = pd.DataFrame(long)
    if block.get("label") and not df.empty:
        lines += layout.flagged_lines(df, lambda r: fmt(block["label"], r._asdict()),
                                      {m: s["label"] for m, s in metrics.items()})
    return long, lines


def _section(block: dict[str, Any]) -> list[str]:
    out = ["", block["heading"], ""] if block.get("heading") else [""]
    return out + ([block["intro"], ""] if block.get("intro") else [])


def _grid_reasons(block: dict[str, Any]) -> dict[tuple[str, str], str]:
    """``not_run: [{checkpoints: [...], detectors: [...], reason: ...}]`` → ``{(checkpoint, detector): "not run:
    reason"}``: rows that cannot run here say why instead of "not run yet"."""
    out = {}
    for rule in block.get("not_run") or []:
        for c in rule["checkpoints"]:
            for d in rule["detectors"]:
                out[c, d] = f"not run: {rule['reason']}"
    return out


def grid_block(block: dict[str, Any], ctx: Context) -> tuple[list[dict], list[str]]:
    """Ours only: ``checkpoints`` × ``detectors`` rows, one column per OOD set present (``sets``: only these, in this
    order), then the mean columns (``mean_columns``: ``[{name, label, sets}]``, e.g. a far-OOD and a near-OOD mean;
    default one ``mean`` over every set shown), per metric. With ``per_checkpoint`` each checkpoint's table shows the
    sets it has rows for."""
    rows = ctx.rows
    ckpt_labels = {**names.CHECKPOINTS, **(block.get("checkpoint_labels") or {})}
    dets = block["detectors"]
    dets = dets if isinstance(dets, dict) else {d: d for d in dets}
    if block.get("more_detectors") and not rows.empty:
        dets = {**dets, **{d: d for d in sorted(set(rows.detector) - set(dets))}}
    groups = [[c] for c in block["checkpoints"]] if block.get("per_checkpoint") else [list(block["checkpoints"])]
    long, lines = [], []
    reasons = _grid_reasons(block)
    for group in groups:
        sets, means = layout.block_columns(block, rows[rows.checkpoint.isin(group)] if not rows.empty else rows)
        table_rows = [(_grid_label(block, ckpt_labels, c, d, label, rows), c, d) for c in group
                      for d, label in dets.items()]
        if block.get("per_checkpoint"):
            c = group[0]
            ok = rows[(rows.checkpoint == c) & (rows.status == "ok")] if not rows.empty else rows
            lines += ["", f"## `{c}` — {ckpt_labels.get(c, c)}", "",
                      f"Not run yet: `python run.py +paper={ctx.name}`." if ok.empty else
                      f"ID: {layout.id_data_text(ok)}. OOD images: {layout.ood_counts_text(ok)}."]
        tested = _significance_marks(block, ctx, group)
        if block.get("significance") and block.get("per_checkpoint") and not rows.empty:
            lines += [significance.sentence(ctx.results, ctx.name, group[0] in tested)]
        for m in block["metrics"]:
            mine = {c: {(col, det): mark for (metric, col, det), mark in t.items() if metric == m["ours"]}
                    for c, t in tested.items()}
            md, recs = layout.grid(rows, table_rows, sets, m["ours"], bool(m.get("complement")),
                                   bool(m.get("lower_is_better")), missing=ctx.missing, marks=mine,
                                   means=[(n, ms) for n, _, ms in means], reasons=reasons)
            recs = [{**(block.get("extra_keys") or {}), **r} for r in recs]
            if m.get("name"):
                recs = [{**r, "metric": m["name"]} for r in recs]
            long += recs
            heading = fmt(m["heading"], {"checkpoint": group[0]}) if "{" in m["heading"] else m["heading"]
            intro = ("Percent; **bold** = significantly best, *italics* = tied for best (see above)." if group[0] in
                     tested and len(group) == 1 else "Percent; best of each column in bold.")
            lines += ["", heading, "", block.get("intro", intro), "",
                      *layout.md_table([block.get("row_head", "Checkpoint / detector"),
                                        *layout.ood_head(sets, names.OOD_LABELS, [label for _, label, _ in means]),
                                        "Status"], md)]
    return long, lines


def _significance_marks(block: dict[str, Any], ctx: Context, group: list[str]
                        ) -> dict[str, dict[tuple[str, str, str], str]]:
    """The current significance marks of the group's checkpoints (none: the block bolds by value)."""
    if not block.get("significance") or ctx.rows.empty:
        return {}
    found = {c: significance.marks(ctx.results, ctx.name, block, ctx.rows, c) for c in group}
    return {c: m for c, m in found.items() if m is not None}


def _grid_label(block: dict[str, Any], labels: dict[str, str], ckpt: str, det: str, det_label: str,
                rows: pd.DataFrame) -> str:
    text = fmt(block.get("row_label", "{detector_label}"),
               {"checkpoint": ckpt, "checkpoint_label": labels.get(ckpt, ckpt), "detector": det,
                "detector_label": det_label})
    if block.get("show_params") and not rows.empty:
        first = layout.find(rows[rows.status == "ok"], checkpoint=ckpt, detector=det)
        params = layout.params_text(first.detector_params) if first is not None else ""
        text += f" ({params})" if params else ""
    return text


def stored_rows_block(block: dict[str, Any], ctx: Context) -> tuple[list[dict], list[str]]:
    """The ok rows themselves (the page's CSV), grouped by ``method``: the training method the spec declares for
    the checkpoint (``checkpoint_methods``), else the registered checkpoint's name; in the order of ``methods``."""
    labels = block["methods"]
    runs = ctx.rows[ctx.rows.status == "ok"].copy() if not ctx.rows.empty else ctx.rows
    if runs.empty:
        return [], ["", "No stored rows yet: `python run.py +paper=" + ctx.name + "`."]
    runs["method"] = [c if how == "pretrained" else how for how, c in zip(runs.train_method, runs.checkpoint)]
    runs["order"] = runs.method.map({k: i for i, k in enumerate(labels)})
    runs = runs.sort_values(["order", "detector", "ood_dataset"])
    mean = runs.groupby(["order", "method", "detector"], sort=True).agg(
        id_acc=("id_acc", "first"), fpr95=("fpr95", "mean"), auroc=("auroc", "mean"),
        aupr_in=("aupr_in", "mean"), sha=("checkpoint_sha256", "first")).reset_index()
    lines = ["", *layout.md_table(["method", "score", "ID acc %", "mean FPR95 %", "mean AUROC %", "mean AUPR-In %",
                                   "checkpoint sha256"],
                                  [[labels.get(r.method, r.method), r.detector, f"{100 * r.id_acc:.2f}",
                                    f"{100 * r.fpr95:.1f}", f"{100 * r.auroc:.2f}", f"{100 * r.aupr_in:.2f}",
                                    f"`{r.sha[:16]}…`"] for r in mean.itertuples()])]
    sets = sorted(runs.ood_dataset.unique())
    per = []
    for (_, method, det), g in runs.groupby(["order", "method", "detector"], sort=True):
        by = g.set_index("ood_dataset")
        per.append([labels.get(method, method), det, *(f"{100 * by.loc[s, 'fpr95']:.1f} / "
                                                       f"{100 * by.loc[s, 'auroc']:.1f}" if s in by.index else "—"
                                                       for s in sets)])
    lines += ["", "Per OOD set (FPR95 % / AUROC %):", "", *layout.md_table(["method", "score", *sets], per)]
    return runs.drop(columns=["order", "train_method"]).to_dict("records"), lines


def versus_block(block: dict[str, Any], ctx: Context) -> tuple[list[dict], list[str]]:
    """Each of ``detectors`` against ``reference`` on the same checkpoint and images, per ``checkpoints``: on how
    many of ``sets`` it is better (``metric``), on how many better and worse by more than 2σ of the difference (σ² =
    the two rows' bootstrap variances: conservative, the two scores share their images), and its mean Δ — so a
    page's sentence like "p = 99 beats energy on every natural-image set" is counted from the stored rows."""
    metric, ref, sets = block["metric"], block["reference"], list(block["sets"])
    lower = bool(block.get("lower_is_better"))
    dets = block["detectors"]
    dets = dets if isinstance(dets, dict) else {d: d for d in dets}
    long, table = [], []
    for ckpt in block["checkpoints"]:
        for det, label in dets.items():
            diffs, sig, worse = [], 0, 0
            for s in sets:
                a = layout.find(ctx.rows, checkpoint=ckpt, detector=det, ood_dataset=s)
                b = layout.find(ctx.rows, checkpoint=ckpt, detector=ref, ood_dataset=s)
                (va, sa), (vb, sb) = layout.ours_pct(a, metric), layout.ours_pct(b, metric)
                if va is None or vb is None:
                    continue
                d = (vb - va) if lower else (va - vb)  # > 0: better than the reference
                diffs.append(d)
                sig += d > 2 * math.hypot(sa or 0.0, sb or 0.0)
                worse += -d > 2 * math.hypot(sa or 0.0, sb or 0.0)
            done = len(diffs) == len(sets)
            better = sum(d > 0 for d in diffs)
            long.append({"checkpoint": ckpt, "detector": det, "reference": ref, "metric": metric,
                         "status": "ok" if done else ctx.missing, "better": better if done else None,
                         "better_2sigma": sig if done else None, "worse_2sigma": worse if done else None,
                         "n_sets": len(sets),
                         "mean_delta": sum(diffs) / len(diffs) if done else None})
            counts = (f"{better} of {len(sets)}", f"{sig} of {len(sets)}", f"{worse} of {len(sets)}",
                      f"{sum(diffs) / len(diffs):+.1f}") if done else ("—",) * 4
            table.append([f"`{ckpt}`", label, *counts, "ok" if done else ctx.missing])
    head = block.get("heading", f"### Against {ref}: {metric}")
    sets_text = ", ".join(names.OOD_LABELS.get(s, s) for s in sets)
    lines = ["", head, "", block.get("intro", f"Over {sets_text}; Δ = better than {ref} in points."), "",
             *layout.md_table(["Checkpoint", "Detector", f"better than {ref}", "better by > 2σ", "worse by > 2σ",
                               "mean Δ", "Status"], table)]
    return long, lines


def python_block(block: dict[str, Any], ctx: Context) -> tuple[list[dict], list[str]]:
    """The escape hatch: ``hook: package.module:function`` renders a genuinely new aggregation."""
    module, _, func = str(block["hook"]).partition(":")
    return getattr(importlib.import_module(module), func)(block, ctx)


BLOCKS: dict[str, Callable[[dict[str, Any], Context], tuple[list[dict], list[str]]]] = {
    "compare": compare_block, "grid": grid_block, "stored_rows": stored_rows_block, "versus": versus_block,
    "python": python_block}


# ---------------------------------------------------------------------------------------------- the page

def with_methods(rows: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """``train_method``: how each row's checkpoint was made, as the spec declares per sha256 (default
    ``pretrained``: a registered published checkpoint)."""
    if rows.empty:
        return rows
    declared = spec.get("checkpoint_methods") or {}
    rows = rows.copy()
    rows["train_method"] = [(declared.get(s) or {}).get("train_method", "pretrained") for s in
                            rows.checkpoint_sha256.astype(str)]
    return rows


def spec_rows(name: str, spec: dict[str, Any], results: Path, config_dir: Path = CONFIG_DIR) -> pd.DataFrame:
    """The stored rows of a spec's cells, with their ``train_method``."""
    return with_methods(load_cells(spec_cells(name, spec.get("cells") or [], Path(config_dir)), results), spec)


def build(name: str, results: Path, config_dir: Path = CONFIG_DIR) -> tuple[pd.DataFrame, str, list[Cell]]:
    """Render spec ``name`` from ``results/`` (published CSVs in ``paper/``, stored rows in ``runs/``)."""
    spec = load_spec(name, config_dir)
    cells = spec_cells(name, spec.get("cells") or [], Path(config_dir))
    rows = with_methods(load_cells(cells, results), spec)
    ctx = Context(name, spec, rows, cells, Path(results), f"not run yet (python run.py +paper={name})")
    long, body = [], []
    for block in spec["blocks"]:
        recs, lines = BLOCKS[block["kind"]](block, ctx)
        long += recs
        body += lines
    df = pd.DataFrame(long)
    notes = spec_path(name, config_dir).with_suffix(".md")
    before, _, after = (notes.read_text() if notes.is_file() else "").partition(NOTES_AFTER)
    lines = [f"# {spec['title']}", ""] + ([before.strip(), ""] if before.strip() else [])
    lines += ["## Our rows", "", *provenance(ctx), ""]
    if any(b["kind"] == "compare" for b in spec["blocks"]):
        sim = chance.stored(Path(results), name, df)
        lines += [layout.noise_summary(df, spec.get("no_comparison", ""), lambda m: chance.text(sim, m)), ""]
        keys = [k for b in spec["blocks"] if b["kind"] == "compare" for k in b["keys"]]
        lines += [layout.counts_by_status(df, list(dict.fromkeys(keys))) + "."]
    body += ["", after.strip()] if after.strip() else []
    return df, "\n".join(lines + body).rstrip("\n") + "\n", cells


def provenance(ctx: Context) -> list[str]:
    """Per result store: the spec's cells (run / stored / cannot compose) and the provenance of their rows."""
    out = []
    stores = list(dict.fromkeys(c.store for c in ctx.cells if not c.error))
    for store in stores:
        mine = [c for c in ctx.cells if c.store == store and not c.error]
        n_stored = sum(c.path(ctx.results).is_file() for c in mine)
        rows = ctx.rows[ctx.rows.experiment == store] if not ctx.rows.empty and "experiment" in ctx.rows else \
            ctx.rows
        out += [f"- `results/runs/{store}/`: {n_stored} of {len(mine)} cells stored."]
        out += layout.run_facts(rows, f"`python run.py +paper={ctx.name}`; stored rows `results/runs/{store}/`")
    store_ = Store(ctx.results, Path())
    unstored = [c for c in ctx.cells if not c.error and not c.path(ctx.results).is_file()]
    near = next(((c, m) for c in unstored if (m := store_.near_misses(c.store, c.run_name, c.identity, 1))), None)
    if near:
        out.append(f"- {len(unstored)} cells not stored; a stored cell of the same detector and checkpoint is another "
                   f"config, e.g. for `{' '.join(near[0].overrides)}`: {near[1][0]}.")
    bad = [c for c in ctx.cells if c.error]
    if bad:
        out.append(f"- {len(bad)} cells not run: {bad[0].error} (e.g. `{' '.join(bad[0].overrides)}`).")
    if not ctx.cells:
        out.append("- No cell of this table can run here (see the Status column).")
    prefixes = tuple(ctx.spec.get("training_logs") or ())
    if prefixes:
        out += [x for x in layout.training_log_facts(ctx.results / "training") if x.startswith(prefixes)]
    return out
