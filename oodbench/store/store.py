"""Where rows and per-image scores live, resolved once per run, and the query API over them.

* rows of a preset (``result_set``, e.g. a paper spec's cells): ``<results>/runs/<result_set>/<run_name>.csv``,
  committed, the tables' source;
* rows of any other run: ``<cache>/runs/<run_name>-<commit12>[+dirty].csv``, a per-user store whose names also carry
  the code's git commit (a run from a modified checkout is stored but never served);
* per-image scores of every cell: ``<cache>/scores/<run_name>-<inputs_id>.npz`` (too large to commit), so a cell
  served from the store still has its scores for paired comparisons.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oodbench.data.files import atomic_savez
from oodbench.store.identity import excluded
from oodbench.store.rows import CorruptRows, problem, read_records, read_rows, write_csv

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("oodbench")


@dataclass(frozen=True)
class Store:
    results: Path
    cache: Path

    # ------------------------------------------------------------------------------------------------ paths
    def result_path(self, result_set: str | None, run_name: str, commit: str = "") -> Path:
        if result_set:
            return Path(self.results) / "runs" / result_set / f"{run_name}.csv"
        dirty = "+dirty" if commit.endswith("+dirty") else ""  # never served: the code may differ from the commit
        return Path(self.cache) / "runs" / f"{run_name}-{commit[:12]}{dirty}.csv"

    def scores_path(self, run_name: str, inputs_key: str) -> Path:
        return Path(self.cache) / "scores" / f"{run_name}-{inputs_key}.npz"

    # ------------------------------------------------------------------------------------------------ writing
    def write(self, path: Path, df: pd.DataFrame, scores: dict[str, np.ndarray] | None = None) -> None:
        """Kept scores first, then the rows (a row file is the commit point: its scores exist when it does)."""
        if scores is not None:
            atomic_savez(self.scores_path(str(df.run_name.iloc[0]), str(df.inputs_id.iloc[0])), **scores)
        write_csv(df, path)

    # ------------------------------------------------------------------------------------------------ reading
    def served(self, path: Path, ood_names: list[str], identity: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The stored rows at ``path`` (as records) if complete and computed from ``identity``; else None, with one
        log line why."""
        if not path.is_file():
            return None
        try:
            records = read_records(path)
        except CorruptRows as err:
            why: str | None = str(err.args[0])
        else:
            why = problem(records, ood_names, identity)
        if why:
            log.warning("stored result %s not used (%s); recomputing", path.name, why)
            return None
        return records

    def kept_scores(self, run_name: str, inputs_key: str) -> dict[str, np.ndarray] | None:
        """A cell's kept per-image scores (``id__<set>`` / ``ood__<set>`` arrays), or None when absent or damaged."""
        f = self.scores_path(run_name, inputs_key)
        if not f.is_file():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            log.warning("kept scores %s are damaged (%s); ignored", f.name, str(err).splitlines()[0][:60])
            return None

    def cell(self, result_set: str, run_name: str) -> pd.DataFrame | None:
        """The validated rows of one stored cell, or None when not stored (:class:`CorruptRows` when damaged)."""
        path = self.result_path(result_set, run_name)
        return read_rows(path) if path.is_file() else None

    def rows(self, result_set: str, **where: object) -> pd.DataFrame:
        """Every stored row of ``result_set`` whose columns equal ``where`` (file order; empty frame when none)."""
        import pandas as pd

        files = sorted((Path(self.results) / "runs" / result_set).glob("*.csv"))
        frames = [read_rows(f) for f in files]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        for k, v in where.items():
            df = df[df[k] == v] if k in df.columns else df.iloc[0:0]
        return df.reset_index(drop=True)

    def near_misses(self, result_set: str, run_name: str, identity: dict[str, Any], limit: int = 2) -> list[str]:
        """Why stored cells of the same id / checkpoint / detector / protocol are not this cell: the identity fields
        whose values differ (``protocol.bootstrap: 100 (stored) vs 200``), for a page's "not run yet" line."""
        import pandas as pd

        prefix = run_name.rsplit("-", 1)[0] + "-"
        out = []
        for f in sorted((Path(self.results) / "runs" / result_set).glob(f"{prefix}*.csv")):
            try:
                stored = json.loads(pd.read_csv(f, usecols=["config"]).config.iloc[0])
            except (OSError, ValueError, KeyError, IndexError, TypeError):
                continue
            diffs = _differences(stored, identity)
            if diffs:
                out.append(f"{f.name}: " + "; ".join(diffs[:3]) + (" ..." if len(diffs) > 3 else ""))
            if len(out) >= limit:
                break
        return out


def _flat(node: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(node, dict) and node:
        return {p: v for k, val in node.items() for p, v in _flat(val, (*path, str(k))).items()}
    return {path: node}


def _differences(stored: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """Identity fields that differ between a stored row's config and a cell's identity (declared fields ignored)."""
    a, b = _flat(stored), _flat(identity)
    keys = sorted(k for k in set(a) | set(b) if k and k[0] in identity and not excluded(k))
    return [f"{'.'.join(k)}: {a.get(k, '—')!r} (stored) vs {b.get(k, '—')!r}" for k in keys if a.get(k) != b.get(k)]
