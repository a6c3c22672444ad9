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
import json
import re
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
    """Hydra's composition of ``+paper=<spec>`` alone (memoized), slimmed to what a run name depends on: without
    Hydra's node and the page declaration (``paper``, never identity), ``detector_name`` written out (it is
    ``${hydra:runtime.choices.detector}``), as plain unresolved data; with the spec file's own global values (merged
    over a group node a cell replaces, as Hydra does). The Hydra context is set up by :func:`spec_cells`."""
    from hydra import compose
    from omegaconf import OmegaConf

    key = (str(config_dir), spec)
    if key not in _BASES:
        try:
            full = compose("config", overrides=[f"+paper={spec}"], return_hydra_config=True)
            slim = OmegaConf.to_container(OmegaConf.masked_copy(full, [k for k in full if k not in ("hydra", "paper")]),
                                          resolve=False)
            slim["detector_name"] = str(full.hydra.runtime.choices.detector)
            page = OmegaConf.load(Path(config_dir) / "paper" / f"{spec}.yaml")
            _BASES[key] = (slim, page)
        except Exception as err:  # noqa: BLE001 — a cell that cannot be composed yet is shown as "not run: <reason>"
            _BASES[key] = err
    return _BASES[key]


_NODES: dict[tuple[str, str, str, str], Any] = {}


def _group_node(config_dir: Path, group: str, value: Any, page: Any = None, spec: str = "") -> Any:
    """A group option's node (plain, unresolved), with the page's own values for the group merged over it."""
    from omegaconf import OmegaConf

    from oodbench.conf import group_node

    key = (str(config_dir), spec, group, str(value))
    if key not in _NODES:
        node = group_node(group, value, config_dir)
        if page is not None and group in page:
            node = OmegaConf.merge(node, page[group])
        _NODES[key] = OmegaConf.to_container(node, resolve=False)
    return _NODES[key]


def _set(tree: dict[str, Any], key: str, value: Any, add: bool) -> None:
    """``key=value`` on plain data as Hydra applies it (``OmegaConf.update(..., merge=True)``): a mapping value is
    merged into a mapping; a key that does not exist is an error unless added (``+key=``)."""
    *path, last = key.split(".")
    node = tree
    for k in path:
        if k not in node or not isinstance(node[k], dict):
            if not add:
                raise KeyError(f"Could not override '{key}': key '{k}' is not in the config")
            node[k] = {}
        node = node[k]
    if last not in node and not add:
        raise KeyError(f"Could not override '{key}': key '{last}' is not in the config")
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        _merge(node[last], value)
    else:
        node[last] = copy.deepcopy(value)


def _merge(into: dict[str, Any], value: dict[str, Any]) -> None:
    for k, v in value.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


def _interpolations(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _interpolations(v)]
    if isinstance(node, list):
        return [s for v in node for s in _interpolations(v)]
    return [node] if isinstance(node, str) and "${" in node else []


def _resolve(tree: dict[str, Any]) -> dict[str, Any]:
    """``OmegaConf.to_container(OmegaConf.create(tree), resolve=True)``, building OmegaConf nodes only for the
    top-level keys that hold an interpolation and those its text names (``${id.name}`` → ``id``); the other keys are
    plain data already. Wrapping a whole run config in nodes was two thirds of ``make tables``. An interpolation
    that reaches further (a chain into a key not named) fails on the reduced tree and the whole tree is resolved, as
    is a tree with a relative interpolation. ``tests/test_paper_specs.py`` checks every cell of every spec against a
    full Hydra compose."""
    from omegaconf import OmegaConf

    holders = [k for k, v in tree.items() if _interpolations(v)]
    if not holders:
        return tree
    texts = " ".join(s for k in holders for s in _interpolations(tree[k]))
    if re.search(r"[{:,]\s*\.", texts):  # a relative interpolation (``${..x}``) names no top-level key
        return OmegaConf.to_container(OmegaConf.create(tree), resolve=True)  # type: ignore[return-value]
    named = {k for k in tree if re.search(rf"(?<![\w.]){re.escape(str(k))}(?![\w])", texts)}
    part = {k: tree[k] for k in tree if k in named or k in holders}
    key = json.dumps(part, sort_keys=True, default=repr)  # the cells of a page share most of these parts
    if key not in _RESOLVED:
        try:
            _RESOLVED[key] = OmegaConf.to_container(OmegaConf.create(part), resolve=True)
        except Exception:  # noqa: BLE001 — e.g. a chain into a key the text does not name: the whole tree
            return OmegaConf.to_container(OmegaConf.create(tree), resolve=True)  # type: ignore[return-value]
    done = copy.deepcopy(_RESOLVED[key])
    return {k: done[k] if k in done else v for k, v in tree.items()}  # type: ignore[index]


_RESOLVED: dict[str, Any] = {}


def _compose(config_dir: Path, spec: str, overrides: tuple[str, ...]) -> Cell:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from oodbench.store import config_identity, derive_run_name

    try:
        base = _base(config_dir, spec)
        if isinstance(base, Exception):
            raise base
        slim, page = base
        tree = copy.deepcopy(slim)
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        for ov in (o for o in parsed if _is_group(o.input_line)):
            group = ov.key_or_group.lstrip("+~")
            tree[group] = copy.deepcopy(_group_node(config_dir, group, ov.value(), page, spec))
            if group == "detector":  # detector_name is Hydra's choice of the group
                tree["detector_name"] = str(ov.value())
        for ov in (o for o in parsed if not _is_group(o.input_line)):
            if ov.is_delete():
                _set(tree, ov.key_or_group, None, add=True)
            else:
                _set(tree, ov.key_or_group, ov.value(), add=ov.is_add())
        resolved = _resolve(tree)
        return Cell(overrides, str(resolved.get("result_set") or ""), derive_run_name(resolved),
                    identity=config_identity(resolved))
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
