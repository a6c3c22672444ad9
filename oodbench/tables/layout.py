"""Pieces of the table engine (:mod:`oodbench.tables.engine`): finding our rows, comparison records, our-only
grids, provenance facts, Markdown and LaTeX.

Our rows are the stored rows of a spec's cells (fractions); published numbers are percent; nothing here runs a model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from oodbench.metrics.significance import cell_pvalues, chance_flags, holm

CELL_KEYS = ("ours", "published", "delta", "noise", "flag")


# ---------------------------------------------------------------------------------------------- our rows

_INDEX: dict[tuple[int, tuple[str, ...]], tuple[pd.DataFrame, dict[tuple[object, ...], int]]] = {}


def find(runs: pd.DataFrame, **eq: object) -> pd.Series | None:
    """The first stored row (stable file order) whose columns equal ``eq``; None when there is none. A hash index
    per (frame, columns) is built on first use, so a page's lookups cost O(rows + lookups), not O(rows × lookups)."""
    if runs.empty or any(k not in runs.columns for k in eq):
        return None
    keys = tuple(sorted(eq))
    hit = _INDEX.get((id(runs), keys))
    if hit is None or hit[0] is not runs:
        index: dict[tuple[object, ...], int] = {}
        for pos, values in enumerate(zip(*(runs[k].tolist() for k in keys))):
            index.setdefault(tuple(values), pos)
        if len(_INDEX) > 256:
            _INDEX.clear()
        hit = _INDEX[(id(runs), keys)] = (runs, index)
    pos = hit[1].get(tuple(eq[k] for k in keys))
    return None if pos is None else runs.iloc[pos]


def is_ok(row: pd.Series | None) -> bool:
    return row is not None and row.status == "ok"


def status_of(row: pd.Series | None, missing: str, ood_name: str | None = None) -> str:
    """``ok``; ``not run: <set> data not available here`` for a stored not-available row; else ``missing``."""
    if is_ok(row):
        return "ok"
    if row is not None:
        what = ood_name or row.get("ood_dataset", "the OOD set")
        return f"not run: {what} data not available here" if row.status == "not_available" else f"not run: {row.status}"
    return missing


def published_value(x: object) -> float | None:
    """A published CSV value as a float: ``acc:85.06`` / ``err:5.16`` → 85.06 / 5.16; empty → None."""
    if x is None:
        return None
    if isinstance(x, str):
        m = re.match(r"\s*(?:acc:|err:)?\s*([-+0-9.]+)", x)
        return float(m.group(1)) if m else None
    v = float(x)  # type: ignore[arg-type]
    return None if math.isnan(v) else v


def ours_pct(row: pd.Series | None, metric: str, complement: bool = False) -> tuple[float | None, float | None]:
    """Our value and its bootstrap standard deviation in percent (``complement``: 100 − value, e.g. TNR = 1 − FPR)."""
    if not is_ok(row):
        return None, None
    std = row.get(f"{metric}_std")
    value = 100 * row[metric]
    return (100 - value if complement else value), (100 * std if std is not None else None)


def mean_row(rows: Sequence[pd.Series], metrics: Iterable[str]) -> pd.Series:
    """The average of several OOD sets' rows (same checkpoint and detector) as one pseudo-row.

    Its ``<metric>_std`` is the mean of the sets' standard deviations: the sets share the ID images, so their
    errors are correlated, and the mean of the σ's is the bound for perfectly correlated errors.
    """
    first = rows[0]
    out = {k: first[k] for k in first.index if k in ("status", "n_id", "id_acc", "checkpoint", "detector")}
    out["status"] = "ok"
    out["n_ood"] = int(sum(int(r.n_ood) for r in rows))
    for m in metrics:
        out[m] = sum(float(r[m]) for r in rows) / len(rows)
        stds = [r.get(f"{m}_std") for r in rows]
        out[f"{m}_std"] = None if any(s is None or pd.isna(s) for s in stds) else sum(stds) / len(stds)
    return pd.Series(out)


def records(keys: dict[str, object], cells: dict[str, dict[str, object]], status: str,
            row: pd.Series | None, columns: dict[str, tuple[str, bool]] | None = None) -> list[dict[str, object]]:
    """Long-form rows: one per (published row, metric), with n and the comparison cell; with ``columns`` (page
    metric → our metric column and whether the page shows 100 − it) also the stored run it compares (``run_name``,
    ``inputs_id``, ``ood_dataset``, ``our_metric``, ``complement``; no run for a mean over sets), which the
    chance-flag simulation reads."""
    ok = status == "ok"
    out = [{**keys, "metric": m, "status": status, "n_id": row.n_id if ok else None,
            "n_ood": row.n_ood if ok else None, **{k: c[k] for k in CELL_KEYS}} for m, c in cells.items()]
    if columns is not None:
        single = ok and isinstance(row.get("run_name"), str)
        for r in out:
            r.update({k: row.get(k) if single else None for k in ("run_name", "inputs_id", "ood_dataset")},
                     our_metric=columns[str(r["metric"])][0], complement=columns[str(r["metric"])][1])
    return out


def n_text(row: pd.Series | None) -> str:
    return f"{int(row.n_id)} / {int(row.n_ood)}" if is_ok(row) else ""


def pct_text(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


# ---------------------------------------------------------------------------------------------- detector params

HIDDEN_PARAMS = {"score", "seed", "variant", "feature_stats", "mean_feature"}


def params_text(raw: object) -> str:
    """``{"p": 95.0, "score": "Energy(…)", "seed": 0}`` → ``p=95``."""
    if not isinstance(raw, str):
        return ""
    params = json.loads(raw)
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in sorted(params.items()) if k not in HIDDEN_PARAMS and v is not None)


# ---------------------------------------------------------------------------------------------- protocol facts

def _col(df: pd.DataFrame, name: str) -> pd.Series:
    """A column, or an empty one for rows written before it existed."""
    return df[name] if name in df.columns else pd.Series(dtype=object)


def checkpoints_text(ok: pd.DataFrame) -> str:
    """Each checkpoint with its sha256 prefix; a fine-tuned file (``final``) is named by its training method."""
    def name(r: object) -> str:
        how = getattr(r, "train_method", "pretrained")
        return f"`{r.checkpoint}`" if how == "pretrained" else f"`{r.checkpoint}` ({how} fine-tune)"
    return ", ".join(sorted({f"{name(r)} (sha256 `{r.checkpoint_sha256[:16]}…`)" for r in ok.itertuples()}))


def id_data_text(ok: pd.DataFrame) -> str:
    return "; ".join(sorted({f"{r.id_source}, top-1 {100 * r.id_acc:.2f} %" for r in ok.itertuples()}))


def commits_text(ok: pd.DataFrame) -> str:
    return ", ".join(sorted({str(c)[:12] for c in ok.git_commit}))


def deviations(ok: pd.DataFrame) -> list[str]:
    return [f"- Deviation: {n}" for n in sorted({n for n in _col(ok, "id_notes").dropna()})]


def protocol_text(ok: pd.DataFrame) -> str:
    """The protocol settings our rows were scored under, read from their resolved configs."""
    out = set()
    for c in _col(ok, "config").dropna().unique():
        p = json.loads(c).get("protocol", {})
        cap = "every OOD image" if p.get("max_ood") is None else f"at most {p['max_ood']} OOD images per set (seeded)"
        out.add(f"`protocol={p.get('name')}`: ID holdout {p.get('id_holdout')}, OOD holdout {p.get('ood_holdout')}, "
                f"{cap}, `{p.get('metrics')}` metrics, {p.get('bootstrap')} bootstrap resamples")
    return "; ".join(sorted(out))


def ood_counts_text(ok: pd.DataFrame) -> str:
    counts = ok.groupby("ood_dataset").n_ood.agg(lambda s: sorted({int(x) for x in s}))
    return ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in counts.items())


def run_facts(runs: pd.DataFrame, how: str) -> list[str]:
    """Bullets with the provenance of the rows a page shows (checkpoints, ID data, protocol, commits)."""
    ok = runs[runs.status == "ok"] if not runs.empty else runs
    if ok.empty:
        return [f"- No stored rows yet: {how}."]
    return [f"- Checkpoints: {checkpoints_text(ok)}",
            f"- ID data: {id_data_text(ok)}",
            f"- Our protocol: {protocol_text(ok)}; ID positive",
            f"- OOD images scored: {ood_counts_text(ok)}",
            *deviations(ok),
            f"- Runs: {how}; git {commits_text(ok)}; per-row device, timings and the resolved config are in those "
            "CSVs."]


# ---------------------------------------------------------------------------------------------- Markdown

NOISE_NOTE = ("(|Δ| ≤ 2σ; σ = bootstrap over our ID and OOD images, combined with the paper's 0.1-point rounding); "
              "† marks the others. Cells: ours / published (Δ), percent.")


def compared(df: pd.DataFrame) -> pd.DataFrame:
    """The cells that have both our value and a published one."""
    if df.empty or not {"ours", "published"} <= set(df.columns):
        return df.iloc[:0]
    return df[(df.status == "ok") & df.ours.notna() & df.published.notna()]


def noise_summary(df: pd.DataFrame, none: str = "", chance: Callable[[int], str] | None = None) -> str:
    """The page's headline: cells within noise, the flags a perfect reproduction raises by chance (``chance(m)``:
    the simulated text, :mod:`oodbench.tables.chance`; default the independent-cells bound) and Holm's count."""
    cmp = compared(df)
    if cmp.empty:
        return f"**No cell compared with a published value.** {none}".rstrip()
    within = int((cmp.flag == "").sum())
    mean, hi = chance_flags(len(cmp))
    n_holm = sum(holm(cell_pvalues(cmp.delta.astype(float), cmp.noise.astype(float))))
    by_chance = chance(len(cmp)) if chance else (
        f"A perfect reproduction would flag {mean:.1f} of these {len(cmp)} cells by chance on average (4.55 % each), "
        f"at most {hi} in 95 % of pages if the cells were independent (they share their ID images, which widens "
        "that spread).")
    return (f"**{within} of {len(cmp)} cells reproduced within noise** {NOISE_NOTE} {by_chance} "
            f"{n_holm} of the {len(cmp) - within} flags stay significant after Holm's correction over the page's "
            f"{len(cmp)} cells (family-wise α = 0.05); they are marked ‡ in the list of cells outside the noise.")


def flagged_lines(df: pd.DataFrame, label: Callable[[object], str], metric_names: dict[str, str]) -> list[str]:
    cmp = compared(df)
    if cmp.empty or (cmp.flag == "").all():
        return []
    cmp = cmp.assign(holm=holm(cell_pvalues(cmp.delta.astype(float), cmp.noise.astype(float))))
    flagged = cmp[cmp.flag != ""]
    return ["", "## Cells outside the noise", "", "‡ = still significant after Holm's correction over the page's "
            f"{len(cmp)} compared cells.", ""] + [
        f"- {label(r)} {metric_names[r.metric]}: ours {r.ours:.1f}, published {r.published:.1f}, "
        f"Δ {r.delta:+.1f}, 2σ {r.noise:.1f}{' ‡' if r.holm else ''}" for r in flagged.itertuples()]


def md_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def counts_by_status(df: pd.DataFrame, keys: Sequence[str]) -> str:
    """``12 rows: 4 ok; 8 not run: …`` over the table rows (unique ``keys``)."""
    if df.empty:
        return "0 rows"
    rows = df.drop_duplicates(list(keys))
    parts = [f"{n} {s}" for s, n in sorted(rows.status.value_counts().items(), key=lambda kv: (kv[0] != "ok", kv[0]))]
    return f"{len(rows)} rows: " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------- LaTeX

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "†": r"$^\dagger$", "‡": r"$^\ddagger$",
        "—": "---", "–": "--", "Δ": r"$\Delta$", "σ": r"$\sigma$", "≤": r"$\le$", "≥": r"$\ge$", "×": r"$\times$",
        "ε": r"$\varepsilon$", "→": r"$\to$", "≈": r"$\approx$", "±": r"$\pm$", "…": r"\ldots{}", "−": "-",
        "↓": r"$\downarrow$", "↑": r"$\uparrow$"}


def tex_escape(text: str) -> str:
    text = text.replace("`", "")
    out = "".join(_TEX.get(ch, ch) for ch in text)
    return re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", out)


def markdown_to_latex(md: str) -> str:
    """Every Markdown table of a page as a plain LaTeX ``tabular`` (same rows), each under its heading.

    Needs ``\\usepackage[T1]{fontenc}``/UTF-8 input only for characters outside the escape map.
    """
    lines, out, heading = md.splitlines(), [], ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            table = [line]
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                table.append(lines[i])
                i += 1
            cells = [[c.strip() for c in r.strip()[1:-1].split("|")] for r in table]
            width = len(cells[0])
            out += [f"% {tex_escape(heading)}", r"\begin{tabular}{" + "l" * width + "}", r"\hline",
                    " & ".join(tex_escape(c) for c in cells[0]) + r" \\", r"\hline"]
            out += [" & ".join(tex_escape(c) for c in (r + [""] * width)[:width]) + r" \\" for r in cells[1:]]
            out += [r"\hline", r"\end{tabular}", ""]
            continue
        i += 1
    return "\n".join(out) + ("\n" if out else "")


def training_log_facts(training_dir: Path | None) -> list[str]:
    """One bullet per ``results/training/<method>_*.log``: what was trained on what, and the final sha256."""
    out = []
    if training_dir is None or not Path(training_dir).is_dir():
        return out
    for log in sorted(Path(training_dir).glob("*.log")):
        text = log.read_text(errors="replace")
        what = re.search(r"\] - (\w+ on \S+: .*?) \| (?:cuda|cpu)", text)
        sha = re.search(r"sha256:\s*([0-9a-f]{16})", text)
        epochs = re.findall(r"epoch (\d+)/(\d+):", text)
        if what:
            done = f"{epochs[-1][0]}/{epochs[-1][1]} epochs" if epochs else "no epoch finished"
            out.append(f"- `{log.name}`: {what.group(1)}; {done}"
                       + (f"; final sha256 `{sha.group(1)}…`" if sha else ""))
    return out


# ---------------------------------------------------------------------------------------------- our-only grids

def grid(runs: pd.DataFrame, rows: Sequence[tuple[str, str, str]], sets: Sequence[str], metric: str,
         complement: bool = False, lower_is_better: bool = False, missing: str = "not run yet",
         marks: dict[str, dict[tuple[str, str], str]] | None = None,
         means: Sequence[tuple[str, Sequence[str]]] | None = None,
         reasons: dict[tuple[str, str], str] | None = None) -> tuple[list[list[str]], list[dict[str, object]]]:
    """Our numbers only: one table row per ``(label, checkpoint, detector)``, one column per OOD set, then the mean
    columns ``means`` (``(name, sets)``; default one ``mean`` over ``sets``), in percent. A row's mean covers the
    column's sets that its checkpoint has any ok row for (a near-OOD mean: CIFAR-100 for a CIFAR-10 network, CIFAR-10
    for a CIFAR-100 one) and is shown only when the row has all of them. The best value of each column among the rows
    of the same checkpoint is in bold — or, for a checkpoint in ``marks`` (``{checkpoint: {(column, detector): "best"
    | "tied" | ""}}``, column = set or mean name, from :mod:`oodbench.tables.significance`), the significantly best
    cell in bold and the cells tied for best in italics.

    ``reasons``: ``{(checkpoint, detector): "not run: why"}`` replaces ``missing`` for rows that cannot run.

    Returns the Markdown rows (label, sets…, means…, status) and long-form records.
    """
    row_missing = [(reasons or {}).get((c, d), missing) for _, c, d in rows]
    means = [("mean", list(sets))] if means is None else [(n, list(ms)) for n, ms in means]
    columns = [*sets, *(n for n, _ in means)]
    values: list[list[float | None]] = []
    recs: list[dict[str, object]] = []
    name = metric + ("_complement" if complement else "")
    ok_runs = runs[runs.status == "ok"] if not runs.empty else runs
    has = {(c, s) for c, s in zip(ok_runs.checkpoint, ok_runs.ood_dataset)} if not ok_runs.empty else set()
    own_sets: list[list[str]] = []
    for (_, ckpt, det), miss in zip(rows, row_missing):
        found = [find(runs, checkpoint=ckpt, detector=det, ood_dataset=s) for s in sets]
        vals = [ours_pct(r, metric, complement) for r in found]
        by_set = {s: v for s, (v, _) in zip(sets, vals)}
        row_means = []
        for _, msets in means:
            own = [s for s in msets if (ckpt, s) in has or not has]  # no rows at all: every set (nothing shown)
            got = [by_set.get(s) for s in own]
            row_means.append(sum(got) / len(got) if got and all(v is not None for v in got) else None)  # type: ignore
        values.append([v for v, _ in vals] + row_means)
        own_sets.append([s for s in sets if (ckpt, s) in has or not has])
        for s, r, (v, sd) in zip(sets, found, vals):
            recs.append({"checkpoint": ckpt, "detector": det, "ood": s, "metric": name,
                         "status": "ok" if v is not None else miss, "n_id": r.n_id if v is not None else None,
                         "n_ood": r.n_ood if v is not None else None, "ours": v, "std": sd})
        for (mname, _), mean in zip(means, row_means):
            recs.append({"checkpoint": ckpt, "detector": det, "ood": mname, "metric": name,
                         "status": "ok" if mean is not None else miss, "n_id": None, "n_ood": None, "ours": mean,
                         "std": None})
    pick = min if lower_is_better else max
    best: dict[tuple[str, int], float | None] = {}
    for ckpt in {c for _, c, _ in rows}:
        group = [v for (_, c, _), v in zip(rows, values) if c == ckpt]
        for j in range(len(columns)):
            col = [v[j] for v in group if v[j] is not None]
            best[ckpt, j] = round(pick(col), 1) if len(col) > 1 else None
    out = []
    for (label, ckpt, det), vals, own, miss in zip(rows, values, own_sets, row_missing):
        n_ok = sum(v is not None for s, v in zip(sets, vals) if s in own)
        status = "ok" if n_ok == len(own) else miss if n_ok == 0 else f"{n_ok} of {len(own)} sets"
        tested = (marks or {}).get(ckpt)
        if tested is not None:
            style = {"best": "**{}**", "tied": "*{}*"}
            cells = [style.get(tested.get((columns[j], det), ""), "{}").format(pct_text(v))
                     if v is not None else pct_text(v) for j, v in enumerate(vals)]
        else:
            cells = [f"**{pct_text(v)}**" if v is not None and round(v, 1) == best[ckpt, j] else pct_text(v)
                     for j, v in enumerate(vals)]
        out.append([label, *cells, status])
    return out, recs


def ood_head(sets: Sequence[str], labels: dict[str, str], means: Sequence[str] = ("mean",)) -> list[str]:
    return [labels.get(s, s) for s in sets] + list(means)


def grid_columns(runs: pd.DataFrame, order: Sequence[str], explicit: bool = False,
                 mean_columns: Sequence[dict[str, object]] | None = None
                 ) -> tuple[list[str], list[tuple[str, str, list[str]]]]:
    """A grid's OOD-set columns over ``runs`` — the sets with an ok row, in ``order`` (others after, sorted; with
    ``explicit``, only the sets of ``order``) — and its mean columns ``(name, label, sets)``: one per entry
    ``{name, label, sets}`` of ``mean_columns``, over the shown sets among its ``sets`` (an entry none of whose sets
    is shown is left out); default one ``mean`` over every shown set."""
    sets = present_sets(runs, order)
    if explicit:
        sets = [s for s in sets if s in order]
    if not mean_columns:
        return sets, [("mean", "mean", list(sets))]
    out = []
    for m in mean_columns:
        own = [s for s in sets if s in list(m["sets"])]  # type: ignore[arg-type]
        if own:
            out.append((str(m["name"]), str(m.get("label", m["name"])), own))
    return sets, out


def block_columns(block: dict[str, object], runs: pd.DataFrame) -> tuple[list[str], list[tuple[str, str, list[str]]]]:
    """A grid block's set and mean columns over ``runs`` (its ``sets`` and ``mean_columns``; :func:`grid_columns`):
    what the engine shows and what :mod:`oodbench.tables.significance` tests."""
    from oodbench.tables.names import OOD_LABELS

    order = list(block.get("sets") or OOD_LABELS)  # type: ignore[call-overload]
    return grid_columns(runs, order, bool(block.get("sets")), block.get("mean_columns"))  # type: ignore[arg-type]


def present_sets(runs: pd.DataFrame, order: Sequence[str]) -> list[str]:
    """The OOD sets with at least one ok row, in ``order`` (others after, sorted)."""
    if runs.empty:
        return []
    have = set(runs[runs.status == "ok"].ood_dataset)
    return [s for s in order if s in have] + sorted(have - set(order))
