"""A cell's identity: everything in its resolved config that its numbers depend on.

The run name (and so the store file a sweep skips on, and the cell a paper page reads) hashes the resolved config
minus the fields declared here not to change a number — never a hand list of what *is* included, so a new config
field is part of the identity until someone declares (with a reason) that it is not. ``tests/test_identity.py`` walks
every field of the composed default config and of every group option: each must fall under :data:`IDENTITY_ROOTS`
or :data:`NOT_IDENTITY`, changing an identity field must change the name, and changing a declared one must not.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oodbench.store.hashing import stable_hash

# top-level keys whose whole subtree is identity (minus the NOT_IDENTITY patterns below)
IDENTITY_ROOTS = ("id", "arch", "detector", "protocol", "ood", "tf32", "detector_name")

# dotted paths (``*`` = any one key) that never change a number, and why
NOT_IDENTITY: dict[str, str] = {
    "hydra": "Hydra's own settings: output directories, launcher, sweeper, logging",
    "paths": "where data, weights, cache and results live; what was read is in the inputs id (sha256 of the "
             "checkpoint, content id of every image set)",
    "device": "where the network runs; fp32 numbers agree across devices within float rounding, and the numeric "
              "mode that does not (TF32) is the identity field `tf32`; every row records the device",
    "batch_size": "how many images share one forward pass; every computation is per image (eval mode)",
    "num_workers": "DataLoader decode workers; the same batches in the same order (tests/test_extraction_workers.py)",
    "cache": "whether representations are read from / written to the cache; an entry is keyed by its content",
    "rerun": "whether a stored cell is recomputed",
    "run_name": "the name this identity produces (or an explicit one)",
    "result_set": "which store directory the rows go to",
    "paper": "a page declaration (oodbench/conf/paper/*.yaml): which cells a page shows, and how",
    "figures": "whether score histograms / ROC curves are drawn next to the rows",
    "*.threads": "decode threads per batch: the same pixels",
    "*.download": "whether a missing file may be fetched; the file's content is in the inputs id",
    "*.*.download": "whether a missing file may be fetched; the file's content is in the inputs id",
    "*.url": "where to get a file",
    "*.*.url": "where to get a file",
    "arch.checkpoints": "a lookup table; the entry it selects is `arch.checkpoint` (identity)",
    "arch.weights": "selects `arch.checkpoint` from `arch.checkpoints` (identity)",
    "detector.meta.paper": "a lookup table of the paper's values; the ones it selects (epsilon, per_ood) are identity",
    "detector.meta.paper_p": "a lookup table of the paper's values; the one it selects (p) is identity",
}


_PATTERNS = [(p, tuple(p.split("."))) for p in NOT_IDENTITY]


@functools.lru_cache(maxsize=65536)
def excluded(path: tuple[str, ...]) -> str | None:
    """The declared pattern covering ``path`` (a tuple of keys; a pattern covers what lies below it), or None."""
    for pattern, parts in _PATTERNS:
        if len(parts) <= len(path) and all(p == "*" or p == k for p, k in zip(parts, path)):
            return pattern
    return None


def plain(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data, without Hydra's node (resolving ``${hydra:...}`` while it is set)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        keep = [k for k in cfg if k != "hydra"]
        return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keep), resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def _strip(node: Any, path: tuple[str, ...]) -> Any:
    if isinstance(node, Mapping):
        return {k: _strip(v, (*path, str(k))) for k, v in node.items() if not excluded((*path, str(k)))}
    return node


def config_identity(cfg: Any) -> dict[str, Any]:
    """The part of the resolved config the numbers depend on: every key but the :data:`NOT_IDENTITY` ones."""
    return _strip(plain(cfg), ())


def derive_run_name(cfg: Any) -> str:
    """``<id>-<checkpoint>-<detector>-<protocol>-<hash of config_identity>``: deterministic, so a sweep skips
    finished cells and a page finds its rows."""
    ident = config_identity(cfg)
    ckpt = Path(str(ident.get("arch", {}).get("checkpoint") or ident.get("arch", {}).get("name", "model"))).stem
    det = ident.get("detector_name") or "detector"
    return f"{ident['id']['name']}-{ckpt}-{det}-{ident['protocol']['name']}-{stable_hash(ident, 8)}"


def leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf path of a plain config tree (for the field walk)."""
    if isinstance(node, Mapping) and node:
        return [p for k, v in node.items() for p in leaves(v, (*path, str(k)))]
    return [path]


def classified(path: tuple[str, ...]) -> bool:
    """Whether a config field is declared: under an identity root, or matched by a NOT_IDENTITY pattern."""
    return bool(path) and (path[0] in IDENTITY_ROOTS or excluded(path) is not None)
