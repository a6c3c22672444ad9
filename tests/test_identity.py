"""A result's identity is derived from its resolved config (issue 19): every field of the composed default config and
of every group option is either part of the identity or declared not to change a number, changing an identity field
changes the run name, changing a declared one does not — so a config field that moves a number can never be served
from another field value's stored row (e.g. ``arch.normalization``, which no hand-kept list covered)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from oodbench.conf import group_node
from oodbench.paths import CONFIG_DIR
from oodbench.store import NOT_IDENTITY, derive_run_name
from oodbench.store.identity import classified, excluded, leaves, plain

GROUPS = ("id", "arch", "detector", "protocol", "ood", "paths")


@pytest.fixture(scope="module")
def configs() -> dict[str, dict[str, Any]]:
    """The default config and one config per group option and per paper spec, as plain resolved trees."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import oodbench.conf  # noqa: F401

    out: dict[str, dict[str, Any]] = {}
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        base = compose("config", return_hydra_config=True)
        for name, cfg in _variants(base):
            HydraConfig.instance().set_config(cfg)
            try:
                out[name] = plain(cfg)
            except Exception as err:  # noqa: BLE001 — e.g. an option whose interpolation needs another group
                out[name] = {"_unresolvable": str(err).splitlines()[0]}
        for spec in sorted(p.stem for p in (CONFIG_DIR / "paper").glob("*.yaml")):
            cfg = compose("config", overrides=[f"+paper={spec}"], return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            out[f"paper={spec}"] = plain(cfg)
    GlobalHydra.instance().clear()
    return out


def _variants(base: DictConfig) -> Iterator[tuple[str, DictConfig]]:
    yield "default", base
    for group in GROUPS:
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            cfg = copy.deepcopy(base)
            OmegaConf.set_readonly(cfg.hydra, False)
            cfg[group] = group_node(group, [path.stem] if group == "ood" else path.stem)
            if group != "ood":
                cfg.hydra.runtime.choices[group] = path.stem
            yield f"{group}={path.stem}", cfg


def _name_with(tree: dict[str, Any], path: tuple[str, ...]) -> str:
    """The run name with the field at ``path`` changed (in place, then restored)."""
    node = tree
    for k in path[:-1]:
        node = node[k]
    v = node[path[-1]]
    node[path[-1]] = (not v if isinstance(v, bool) else v + 1 if isinstance(v, (int, float)) else
                      "changed" if v is None else [*v, "x"] if isinstance(v, list) else f"{v}-changed")
    try:
        return derive_run_name(tree)
    finally:
        node[path[-1]] = v


def test_every_field_is_identity_or_declared(configs: dict[str, dict[str, Any]]) -> None:
    unresolvable = {k: v["_unresolvable"] for k, v in configs.items() if "_unresolvable" in v}
    assert len(unresolvable) <= 2, unresolvable  # only options that need another group (e.g. a wrn arch for svhn)
    undeclared = {(name, ".".join(p)) for name, tree in configs.items() if "_unresolvable" not in tree
                  for p in leaves(tree) if not classified(p)}
    assert not undeclared, f"config fields neither identity nor declared in NOT_IDENTITY: {sorted(undeclared)[:10]}"


def test_identity_fields_move_the_name_and_declared_ones_do_not(configs: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, tree in configs.items():
        if "_unresolvable" in tree:
            continue
        base = derive_run_name(tree)
        per_pattern: dict[str, int] = {}
        for path in leaves(tree):
            if not path or path[0] == "run_name":
                continue
            pattern = excluded(path)
            if pattern is not None:  # a declared subtree (a page spec has hundreds of leaves): a few of each suffice
                per_pattern[pattern] = per_pattern.get(pattern, 0) + 1
                if per_pattern[pattern] > 3:
                    continue
            moved = _name_with(tree, path) != base
            assert moved != bool(excluded(path)), (name, ".".join(path), "excluded" if excluded(path) else "identity")
            checked += 1
    assert checked > 500


def test_every_declaration_is_used(configs: dict[str, dict[str, Any]]) -> None:
    """A NOT_IDENTITY pattern that matches no field of any config is stale (it would hide a future field)."""
    used = {excluded(p) for tree in configs.values() for p in leaves(tree)}
    assert set(NOT_IDENTITY) - used == {"hydra"}  # Hydra's node never reaches the identity (identity.plain drops it)


def test_normalization_is_part_of_the_name(configs: dict[str, dict[str, Any]]) -> None:
    """The hole issue 19 found: arch.normalization changed the numbers but not the run name."""
    tree = configs["default"]
    other = copy.deepcopy(tree)
    other["arch"]["normalization"] = "dice"
    assert derive_run_name(other) != derive_run_name(tree)
