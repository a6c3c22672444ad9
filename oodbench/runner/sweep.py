"""The Hydra callback of every sweep (``hydra.callbacks.summary``): when a multirun ends, write its summary
(:mod:`oodbench.runner.summary`, imported only then, so a single run pays nothing for it) and fail the sweep if a
cell failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks.summary``): write the sweep's summary when the multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        import pandas as pd

        from oodbench.runner.summary import summarize

        sweep_dir = Path(config.hydra.sweep.dir)
        df = summarize(sweep_dir)
        if df is not None:
            text = (sweep_dir / "summary.md").read_text()
            paired = text[text.find("## Paired comparisons"):] if "## Paired comparisons" in text else ""
            print(paired.split("\n- failed:")[0].rstrip() + "\n" if paired else "", end="")
            print(f"sweep summary: {sweep_dir / 'summary.md'} ({len(df)} rows)")
        failed = sorted(sweep_dir.glob("*/failed.csv"))
        if failed:  # every other cell has finished: now the sweep as a whole fails
            for f in failed:
                print(f"oodbench: failed cell {f.parent.name}: {pd.read_csv(f).message.iloc[0]}", file=sys.stderr)
            cells = len(list(sweep_dir.glob("*/.hydra")))
            print(f"oodbench: error: {len(failed)} of {cells} cells failed (listed above; {sweep_dir}); fix them and "
                  "rerun the same command: finished cells are kept", file=sys.stderr)
            raise SystemExit(2)
