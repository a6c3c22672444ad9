"""Hydra sweeper for ``python run.py +paper=<name>``: the union of the spec's cell grids (``paper.cells``).

Hydra's basic sweeper runs one cartesian product (``hydra.sweeper.params``); a paper page often needs several
(e.g. Energy Table 1: a WRN-40-2 grid under the Energy protocol and a DenseNet grid of the post-hoc store). Each
entry of ``paper.cells`` is a grid ``{override: value}`` as in ``hydra.sweeper.params`` (a comma list or a YAML
list is swept). Jobs run in order, each cell once; command-line overrides apply to every cell; a cell that cannot be
composed (a config not written yet) is reported on one line and skipped. Hydra loads
sweepers only from the ``hydra_plugins`` namespace package, hence this location.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


class PaperSweeper(BasicSweeper):
    """A :class:`BasicSweeper` whose job list is the union of the grids in ``paper.cells``."""

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.hydra_context is not None and self.launcher is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        from oodbench.tables.cells import grid_overrides  # here, not at import: Hydra imports every plugin at start

        grids = OmegaConf.to_container(self.config.paper.cells, resolve=False)
        jobs: list[list[str]] = []
        for grid in grid_overrides(grids):  # type: ignore[arg-type]
            for job in self.split_arguments(parser.parse_overrides([*grid, *arguments]), None)[0]:
                if list(job) not in jobs:
                    jobs.append(list(job))
        jobs = [j for j in jobs if self._composes(j)]
        self.overrides, self.batch_index = [jobs], 0
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns, start = [], 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launcher.launch(batch, initial_job_idx=start)
            for r in results:
                _ = r.return_value
            start += len(batch)
            returns.append(results)
        return returns

    def _composes(self, job: list[str]) -> bool:
        """A cell whose config cannot be composed yet (e.g. a detector config not written) is reported and
        skipped; the other cells run."""
        try:
            self.validate_batch_is_legal([job])
            return True
        except Exception as err:  # noqa: BLE001 — Hydra raises several types for a missing config
            print(f"oodbench: cell skipped, cannot be composed: {' '.join(job)}: {str(err).splitlines()[0]}",
                  file=sys.stderr)
            return False
