"""The configs shipped with oodbench (Hydra: ``pkg://oodbench.conf``): groups id, arch, detector, protocol, ood,
paper, paths, and train; and the one resolver they use, registered on import."""

from __future__ import annotations

import os
import secrets
from typing import Any

from omegaconf import OmegaConf

# Job directories carry this process's id and a random suffix: concurrent runs started in the same second never
# share (and overwrite) a directory.
OmegaConf.register_new_resolver("oodbench_uid", lambda: f"{os.getpid()}-{secrets.token_hex(2)}", use_cache=True,
                                replace=True)


def option(group: str, choice: str, config_dir: str | os.PathLike[str] | None = None) -> Any:
    """A group option's node as Hydra composes it — the file ``<group>/<choice>.yaml`` with its own ``defaults``
    (options of the same group, e.g. ``ash_s`` → ``ash``) merged first unless ``_self_`` says otherwise — unresolved
    (its interpolations, e.g. ``${id.name}``, resolve in the config it is put in). Memoized."""
    from pathlib import Path

    root = Path(config_dir) if config_dir is not None else Path(__file__).parent
    key = (str(root), group, choice)
    if key not in _OPTIONS:
        path = root / group / f"{choice}.yaml"
        if not path.is_file():
            names = sorted(p.stem for p in (root / group).glob("*.yaml"))
            raise FileNotFoundError(f"Could not find '{group}/{choice}'; choose from: {', '.join(names)}")
        node = OmegaConf.load(path)
        defaults = list(node.pop("defaults", None) or [])
        parts = [node if d == "_self_" else option(group, str(d), root) for d in defaults]
        _OPTIONS[key] = OmegaConf.merge(*parts) if "_self_" in defaults else OmegaConf.merge(*parts, node)
    return _OPTIONS[key]


def group_node(group: str, value: object, config_dir: str | os.PathLike[str] | None = None) -> Any:
    """The node a group override puts in the config (``ood=[a,b]``: each option under its own name, as its
    ``@package ood.<name>`` header says)."""
    if group == "ood":
        names = value if isinstance(value, (list, tuple)) else [value]
        return OmegaConf.create({str(n): option(group, str(n), config_dir) for n in names})
    return option(group, str(value), config_dir)


_OPTIONS: dict[tuple[str, str, str], object] = {}
