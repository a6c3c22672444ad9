"""Sweeps: one summary table for a whole Hydra multirun, written when the sweep ends.

Each job leaves ``metrics.csv`` in its own directory (a skipped, already-finished cell copies its stored rows
there; a failed cell leaves ``failed.csv`` with its message), so the summary covers every cell of the sweep.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from oodbench.runner.provenance import write_csv

log = logging.getLogger("oodbench")
SHOWN = ["fpr95", "auroc"]


def summarize(sweep_dir: Path) -> pd.DataFrame | None:
    """Collect every job's rows under ``sweep_dir`` and write ``summary.csv`` and ``summary.md`` there."""
    files = sorted(sweep_dir.glob("*/metrics.csv")) + sorted(sweep_dir.glob("*/failed.csv"))
    if not files:
        return None
    df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    write_csv(df, sweep_dir / "summary.csv")
    ok = df[df.status == "ok"].copy()
    lines = [f"# Sweep summary ({len(files)} cells, {int((df.status == 'failed').sum())} failed)", ""]
    if len(ok):
        ok["setting"] = ok.detector + " " + ok.detector_params.map(_short)
        for metric in SHOWN:
            table = ok.pivot_table(index="setting", columns="ood_dataset", values=metric, sort=True) * 100
            table["mean"] = table.mean(axis=1)
            lines += [f"## {metric} (%)", "", *_markdown(table), ""]
    for r in df[df.status == "failed"].itertuples():
        lines.append(f"- failed: {r.run_name}: {r.message}")
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return df


def _short(params: Any) -> str:
    try:
        d = json.loads(params)
    except (TypeError, ValueError):
        return ""
    return ",".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, dict))


def _markdown(table: pd.DataFrame) -> list[str]:
    cols = [str(c) for c in table.columns]
    rows = [f"| {table.index.name} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    rows += [f"| {i} | " + " | ".join(f"{v:.2f}" for v in r) + " |" for i, r in zip(table.index, table.to_numpy())]
    return rows


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks.summary``): write the sweep's summary when the multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        df = summarize(sweep_dir)
        if df is not None:
            print(f"sweep summary: {sweep_dir / 'summary.md'} ({len(df)} rows)")
        failed = sorted(sweep_dir.glob("*/failed.csv"))
        if failed:  # every other cell has finished: now the sweep as a whole fails
            for f in failed:
                print(f"oodbench: failed cell {f.parent.name}: {pd.read_csv(f).message.iloc[0]}", file=sys.stderr)
            cells = len(list(sweep_dir.glob("*/.hydra")))
            print(f"oodbench: error: {len(failed)} of {cells} cells failed (listed above; {sweep_dir}); fix them and "
                  "rerun the same command: finished cells are kept", file=sys.stderr)
            raise SystemExit(2)
