"""A published table declared as data: ``configs/paper/<name>.yaml`` (its ``table:`` node) + the paper's CSV under
``results/paper/`` + an optional notes file, rendered by one engine — no per-paper code.

The same YAML is the Hydra preset that runs the page's cells (``python run.py +paper=<name>``): its
``result_set`` is the store the page reads, its sweep the cells. The ``table:`` node declares:

* ``title``, ``published`` (CSV file name), ``filter`` (column → condition: the rows shown; a condition is a
  value, a list of values, or ``{startswith: text}``);
* ``keys``: the published columns that name a row, printed as the first columns (column → header), and
  ``labels``: column → {prefix: short label} for long published values;
* ``match``: how a published row finds our row — our column → {published column: {published value: ours}}
  (a value missing from a map means "not runnable here"; ``not_run`` says why);
* ``not_run``: rules ``{when: {column: condition}, reason: text}``, first match wins;
* ``metrics``: published column → {label, ours (our column), complement (100 − ours, e.g. TNR = 100 − FPR)};
* ``notes``: a Markdown file beside the YAML, appended as the page's prose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from oodbench.errors import OodbenchError
from oodbench.tables import layout
from oodbench.tables.compare import load_runs


def load_spec(path: Path) -> DictConfig:
    spec = OmegaConf.load(path)
    if "table" not in spec or "result_set" not in spec:
        raise OodbenchError(f"paper spec {path} needs a `table:` node and a `result_set`")
    return spec


def _holds(value: Any, cond: Any) -> bool:
    if isinstance(cond, dict):
        return str(value).startswith(str(cond["startswith"]))
    return value in (cond if isinstance(cond, list) else [cond])


def _matches(row: dict[str, Any], when: dict[str, Any]) -> bool:
    return all(_holds(row.get(k), v) for k, v in when.items())


def _label(value: str, labels: dict[str, str]) -> str:
    return next((short for prefix, short in labels.items() if value.startswith(prefix)), value)


def _our_keys(row: dict[str, Any], match: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any] | None:
    """Our column values for a published row, or None when a published value has no counterpart here."""
    out = {}
    for ours, by_col in match.items():
        ((col, mapping),) = by_col.items()
        if row.get(col) not in mapping:
            return None
        out[ours] = mapping[row[col]]
    return out


def build(spec_path: Path, results: Path) -> tuple[pd.DataFrame, str]:
    """Long-form comparison (one row per published cell × metric) and the Markdown page."""
    spec = load_spec(spec_path)
    t = OmegaConf.to_container(spec.table, resolve=True)
    paper = pd.read_csv(results / "paper" / t["published"], dtype=str).fillna("")
    for col, cond in (t.get("filter") or {}).items():
        paper = paper[paper[col].map(lambda v, c=cond: _holds(v, c))]
    runs = load_runs(results / "runs" / spec.result_set)
    metrics = {m: m_spec["label"] for m, m_spec in t["metrics"].items()}
    source = {m: (m_spec.get("ours", m), bool(m_spec.get("complement", False))) for m, m_spec in t["metrics"].items()}
    how = f"python run.py +paper={spec_path.stem}"
    long, md_rows = [], []
    for p in paper.to_dict("records"):
        keys = {col: _label(p[col], (t.get("labels") or {}).get(col, {})) for col in t["keys"]}
        reason = next((r["reason"] for r in t.get("not_run") or [] if _matches(p, r["when"])), None)
        ours_keys = None if reason else _our_keys(p, t["match"])
        ours = layout.find(runs, **ours_keys) if ours_keys else None
        status = reason or layout.status_of(ours, f"not run yet ({how})")
        cells = layout.compare(ours if status == "ok" else None, p, metrics, source)
        long += layout.records(keys, cells, status, ours)
        text = layout.cells_text(cells) if status == "ok" else [status] + [""] * (len(metrics) - 1)
        md_rows.append([*keys.values(), *text, layout.n_text(ours)])
    df = pd.DataFrame(long)
    return df, _page(spec_path, t, df, md_rows, runs, metrics, how, str(spec.result_set))


def _page(spec_path: Path, t: dict, df: pd.DataFrame, rows: list[list[str]], runs: pd.DataFrame,
          metrics: dict[str, str], how: str, store: str) -> str:
    head = [*t["keys"].values(), *metrics.values(), "n ID / OOD"]
    ok = runs[runs.status == "ok"] if not runs.empty else runs
    facts = [f"Cells: `{how}`; stored rows `results/runs/{store}/`."]
    if not ok.empty:
        facts += [f"- Checkpoints: {layout.checkpoints_text(ok)}", f"- ID data: {layout.id_data_text(ok)}",
                  f"- git {layout.commits_text(ok)}; per-row device, timings and resolved config: in those CSVs."]
    lines = [f"# {t['title']}", "", *facts, "", layout.noise_summary(df), "", *layout.md_table(head, rows)]
    lines += layout.flagged_lines(df, lambda r: " ".join(str(getattr(r, k)) for k in t["keys"]), metrics)
    notes = t.get("notes")
    if notes:
        lines += ["", (spec_path.parent / notes).read_text().rstrip()]
    return "\n".join(lines) + "\n"
