"""The cells a paper spec runs (``paper.cells``, the sweep of ``python run.py +paper=<name>``) and their stored rows.

A spec's ``paper.cells`` is a list of grids, each ``{override: value}`` as in ``hydra.sweeper.params`` (a comma
list or a YAML list is swept); keys starting with ``_`` are not overrides. Each cell is composed through Hydra's
compose API exactly as ``run.py`` would (``+paper=<name>`` first, then the cell's overrides) and named by the
runner's own run-name derivation, so the rows a page reads are, by construction, the rows its sweep writes:
``results/runs/<result_set>/<run_name>.csv``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from oodbench.paths import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"


@dataclass(frozen=True)
class Cell:
    """One composed cell: its overrides, where its rows are stored, or why it cannot be composed."""

    overrides: tuple[str, ...]
    store: str = ""
    run_name: str = ""
    error: str = ""
    meta: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    def path(self, results: Path) -> Path:
        return Path(results) / "runs" / self.store / f"{self.run_name}.csv"


def _values(v: object) -> list[str]:
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    return [s.strip() for s in str(v).split(",")] if not str(v).startswith("[") else [str(v)]


def grid_overrides(grids: Iterable[dict[str, object]]) -> list[list[str]]:
    """Each grid as Hydra sweep overrides (``key=a,b``), for the sweeper."""
    out = []
    for g in grids:
        out.append([f"{k}={','.join(_values(v)) if isinstance(v, (list, tuple)) else v}"
                    for k, v in g.items() if not str(k).startswith("_")])
    return out


def expand(grids: Iterable[dict[str, object]]) -> list[tuple[str, ...]]:
    """Every cell of the union of the grids, as a tuple of single-valued overrides, in sweep order, once each."""
    out: list[tuple[str, ...]] = []
    for g in grids:
        keys = [k for k in g if not str(k).startswith("_")]
        for combo in itertools.product(*(_values(g[k]) for k in keys)):
            cell = tuple(f"{k}={v}" for k, v in zip(keys, combo))
            if cell not in out:
                out.append(cell)
    return out


def _compose(spec: str, overrides: tuple[str, ...]) -> Cell:
    """One cell inside an initialized Hydra context (see :func:`spec_cells`)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from oodbench.cli import derive_run_name

    try:
        cfg = compose("config", overrides=[f"+paper={spec}", *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return Cell(overrides, str(cfg.result_set or ""), derive_run_name(cfg))
    except Exception as err:  # noqa: BLE001 — a cell that cannot be composed yet is shown as "not run: <reason>"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return Cell(overrides, error=f"cannot be composed yet ({reason})")


_CACHE: dict[tuple[str, str, tuple[str, ...]], Cell] = {}


def spec_cells(spec: str, grids: Iterable[dict[str, object]], config_dir: Path = CONFIG_DIR) -> list[Cell]:
    """Every cell of a spec, composed as ``python run.py +paper=<spec> <cell overrides>`` would compose it, with
    the runner's run name (memoized per process)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    todo = [c for c in expand(grids) if (str(config_dir), spec, c) not in _CACHE]
    if todo:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(str(Path(config_dir).resolve()), version_base="1.3"):
                for c in todo:
                    _CACHE[str(config_dir), spec, c] = _compose(spec, c)
        finally:
            GlobalHydra.instance().clear()
    return [_CACHE[str(config_dir), spec, c] for c in expand(grids)]


class CorruptRows(Exception):
    """A stored run CSV that cannot be read as rows."""


NUMERIC = ("n_id", "n_ood", "id_acc", "fpr95", "auroc", "aupr_in", "aupr_out", "detection_error")


def read_rows(path: Path) -> pd.DataFrame:
    """One stored run CSV; :class:`CorruptRows` (with what is wrong) for binary garbage, a truncated row or text
    in a numeric column."""
    raw = Path(path).read_bytes()
    if b"\x00" in raw:
        raise CorruptRows("binary data, not a CSV")
    try:
        text = raw.decode("utf-8")
        df = pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise CorruptRows(f"not a readable CSV ({str(err).splitlines()[0]})") from None
    if not text.endswith("\n"):
        raise CorruptRows("truncated (the last row has no line end)")
    if "status" not in df.columns:
        raise CorruptRows("no status column")
    ok = df.status == "ok"
    for col in (c for c in NUMERIC if c in df.columns):
        bad = pd.to_numeric(df.loc[ok, col], errors="coerce").isna() & df.loc[ok, col].notna()
        if bad.any() or (ok & df[col].isna() & (col in ("n_id", "n_ood", "fpr95", "auroc"))).any():
            raise CorruptRows(f"column {col!r} holds a non-number or is empty in an ok row")
    return df


def load_cells(cells: Iterable[Cell], results: Path) -> pd.DataFrame:
    """The stored rows of every composed cell whose file exists, in cell order (missing cells: no rows)."""
    frames = []
    for c in cells:
        if c.error:
            continue
        p = c.path(results)
        if p.is_file():
            try:
                frames.append(read_rows(p))
            except CorruptRows as err:
                raise CorruptRows(err.args[0], p) from None
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
