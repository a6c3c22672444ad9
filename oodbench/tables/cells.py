"""The cells a paper spec runs (``paper.cells``, the sweep of ``python run.py +paper=<name>``) and their stored rows.

A spec's ``paper.cells`` is a list of grids, each ``{override: value}`` as in ``hydra.sweeper.params`` (a comma
list or a YAML list is swept); keys starting with ``_`` are not overrides. Each cell is composed as ``run.py``
would compose it (``+paper=<name>`` first, then the cell's overrides) and named by the store's run-name derivation
(:func:`oodbench.store.derive_run_name`), so the rows a page reads are, by construction, the rows its sweep writes.

Composition is Hydra's once per page (``+paper=<name>``); a cell's group overrides (``detector=msp``) then replace
that group's node by the option file (with its own ``defaults``), with the page's own values for the group merged
over it, and its dotted overrides (``protocol.max_ood=null``) are applied as Hydra applies them
(``OmegaConf.update(..., merge=True)`` on the parsed value) — the config Hydra would compose, at a fraction of the
cost (a page of 48 cells: one compose, not 48). ``tests/test_paper_specs.py`` checks every cell of every spec against
a full Hydra compose (:func:`compose_hydra`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from oodbench.paths import CONFIG_DIR
from oodbench.store import Store

GROUPS = ("id", "arch", "detector", "protocol", "ood", "paper", "paths")


@dataclass(frozen=True)
class Cell:
    """One composed cell: its overrides, where its rows are stored, or why it cannot be composed."""

    overrides: tuple[str, ...]
    store: str = ""
    run_name: str = ""
    error: str = ""
    identity: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def path(self, results: Path) -> Path:
        return Store(Path(results), Path()).result_path(self.store, self.run_name)


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
    seen: set[tuple[str, ...]] = set()
    for g in grids:
        keys = [k for k in g if not str(k).startswith("_")]
        for combo in itertools.product(*(_values(g[k]) for k in keys)):
            cell = tuple(f"{k}={v}" for k, v in zip(keys, combo))
            if cell not in seen:
                seen.add(cell)
                out.append(cell)
    return out


def _is_group(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key in GROUPS or "/" in key


_BASES: dict[tuple[str, str], Any] = {}


def _base(config_dir: Path, spec: str) -> Any:
    """Hydra's composition of ``+paper=<spec>`` alone (memoized): the page's defaults, its global values, Hydra's
    node. The Hydra context is set up around the whole batch by :func:`spec_cells`."""
    from hydra import compose

    key = (str(config_dir), spec)
    if key not in _BASES:
        try:
            _BASES[key] = compose("config", overrides=[f"+paper={spec}"], return_hydra_config=True)
        except Exception as err:  # noqa: BLE001 — a cell that cannot be composed yet is shown as "not run: <reason>"
            _BASES[key] = err
    return _BASES[key]


def _group_node(config_dir: Path, group: str, value: Any) -> Any:
    from oodbench.conf import group_node

    return group_node(group, value, config_dir)


def _compose(config_dir: Path, spec: str, overrides: tuple[str, ...]) -> Cell:
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from oodbench.store import config_identity, derive_run_name

    try:
        base = _base(config_dir, spec)
        if isinstance(base, Exception):
            raise base
        cfg = copy.deepcopy(base)
        OmegaConf.set_readonly(cfg.hydra, False)
        page = OmegaConf.load(Path(config_dir) / "paper" / f"{spec}.yaml")  # the spec's own (global) values
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        OmegaConf.set_struct(cfg, False)
        for ov in (o for o in parsed if _is_group(o.input_line)):
            group = ov.key_or_group.lstrip("+~")
            node = _group_node(config_dir, group, ov.value())
            cfg[group] = OmegaConf.merge(node, page[group]) if group in page else node
            if group != "ood":  # a list choice has no entry (as in Hydra)
                cfg.hydra.runtime.choices[group] = str(ov.value())
        OmegaConf.set_struct(cfg, True)
        for ov in (o for o in parsed if not _is_group(o.input_line)):
            if ov.is_delete():
                OmegaConf.update(cfg, ov.key_or_group, None, force_add=True)
                continue
            with _open(cfg, ov.is_add()):
                OmegaConf.update(cfg, ov.key_or_group, ov.value(), merge=True, force_add=ov.is_add())
        HydraConfig.instance().set_config(cfg)
        return Cell(overrides, str(cfg.result_set or ""), derive_run_name(cfg), identity=config_identity(cfg))
    except Exception as err:  # noqa: BLE001 — as above
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return Cell(overrides, error=f"cannot be composed yet ({reason})")


def compose_hydra(config_dir: Path, spec: str, overrides: tuple[str, ...]) -> Cell:
    """The same cell through a full Hydra compose (what ``run.py`` does); :func:`_compose` must agree with it
    (``tests/test_paper_specs.py``)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from oodbench.store import config_identity, derive_run_name

    cfg = compose("config", overrides=[f"+paper={spec}", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return Cell(overrides, str(cfg.result_set or ""), derive_run_name(cfg), identity=config_identity(cfg))


class _open:  # noqa: N801 - a context manager named for what it does
    """Struct mode off while an ``+key=`` override adds a key (as Hydra allows), on otherwise (a misspelt key fails)."""

    def __init__(self, cfg: Any, adding: bool) -> None:
        self.cfg, self.adding = cfg, adding

    def __enter__(self) -> None:
        from omegaconf import OmegaConf

        OmegaConf.set_struct(self.cfg, not self.adding)

    def __exit__(self, *exc: object) -> None:
        from omegaconf import OmegaConf

        OmegaConf.set_struct(self.cfg, True)


_CACHE: dict[tuple[str, str, tuple[str, ...]], Cell] = {}


def spec_cells(spec: str, grids: Iterable[dict[str, object]], config_dir: Path = CONFIG_DIR) -> list[Cell]:
    """Every cell of a spec, composed as ``python run.py +paper=<spec> <cell overrides>`` would compose it, with
    the store's run name (memoized per process)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import oodbench.conf  # noqa: F401 — registers the resolver the configs use

    cells = expand(grids)
    todo = [c for c in cells if (str(config_dir), spec, c) not in _CACHE]
    if todo:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(str(Path(config_dir).resolve()), version_base="1.3"):
                for c in todo:
                    _CACHE[str(config_dir), spec, c] = _compose(Path(config_dir), spec, c)
        finally:
            GlobalHydra.instance().clear()
    return [_CACHE[str(config_dir), spec, c] for c in cells]


def load_cells(cells: Iterable[Cell], results: Path) -> pd.DataFrame:
    """The stored rows of every composed cell that is stored, in cell order (missing cells: no rows); a damaged
    row file raises :class:`~oodbench.store.CorruptRows` naming it."""
    store = Store(Path(results), Path())
    frames = [df for c in cells if not c.error and (df := store.cell(c.store, c.run_name)) is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
