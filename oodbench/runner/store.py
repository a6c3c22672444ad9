"""The result store: where a cell's rows live, what identifies them, and when stored rows may be served.

A stored result is served only if it is complete (parseable, one row per configured OOD set, finite metrics on
every ``ok`` row) and was computed from the same inputs: the checkpoint's sha256 (of the file actually loaded),
each image set's content id, exact indices and count, and the result-format version. Anything else is
recomputed, with one log line saying why — never a stale or partial number.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from oodbench.data.base import ImageSet
from oodbench.paths import resolve
from oodbench.runner.provenance import git_commit, stable_hash

RESULT_FORMAT = 2  # bump when the meaning of a stored row changes
METRICS = ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_error")
log = logging.getLogger("oodbench")


def result_path(cfg: DictConfig) -> Path:
    """``results/runs/<result_set>/<run_name>.csv`` for presets (committed, the tables' source), else a per-user
    store in the cache dir whose names also carry the code's git commit."""
    if cfg.result_set:
        return resolve("results", cfg.paths.get("results")) / "runs" / cfg.result_set / f"{cfg.run_name}.csv"
    return resolve("cache", cfg.paths.get("cache")) / "runs" / f"{cfg.run_name}-{git_commit()[:12]}.csv"


def scores_path(cfg: DictConfig, inputs_key: str) -> Path:
    """Where a cell's per-image scores are kept (the cache dir: not committed, too large), named by its run and
    inputs, so a cell served from the store still has its scores for paired comparisons."""
    return kept_scores_file(resolve("cache", cfg.paths.get("cache")), cfg.run_name, inputs_key)


def kept_scores_file(cache: Path, run_name: str, inputs_key: str) -> Path:
    """``<cache>/scores/<run>-<inputs>.npz``: what a stored row's ``run_name`` and ``inputs_id`` name."""
    return Path(cache) / "scores" / f"{run_name}-{inputs_key}.npz"


def set_identity(data: ImageSet) -> dict[str, Any]:
    return {"content": data.content_id, "indices": data.index_digest(), "n": len(data)}


def inputs_identity(checkpoint_sha256: str, id_set: ImageSet, ood_sets: dict[str, ImageSet | None],
                    detector_inputs: dict[str, str] | None = None) -> dict:
    """What the numbers of a cell are computed from (besides its config, which names the store file): the
    checkpoint, the sets and any file a detector reads (``Detector.inputs``; the key is absent when none)."""
    identity = {"format": RESULT_FORMAT, "checkpoint": checkpoint_sha256, "id": set_identity(id_set),
                "ood": {k: None if v is None else set_identity(v) for k, v in ood_sets.items()}}
    if detector_inputs:
        identity["detector_inputs"] = dict(sorted(detector_inputs.items()))
    return identity


def inputs_id(identity: dict) -> str:
    return stable_hash(identity, 16)


def load_stored(path: Path, ood_names: list[str], identity: dict) -> pd.DataFrame | None:
    """The stored rows at ``path`` if complete and computed from ``identity``; else None (logged)."""
    if not path.is_file():
        return None
    why = _problem(path, ood_names, identity)
    if why:
        log.warning("stored result %s not used (%s); recomputing", path.name, why)
        return None
    return pd.read_csv(path)


def _problem(path: Path, ood_names: list[str], identity: dict) -> str | None:
    try:
        df = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, OSError) as err:
        return f"unreadable: {str(err).splitlines()[0][:80]}"
    if "status" not in df.columns or "ood_dataset" not in df.columns:
        return "not a result file"
    if sorted(df.ood_dataset.astype(str)) != sorted(ood_names):
        return f"incomplete: {len(df)} rows for {len(ood_names)} OOD sets"
    ok = df[df.status == "ok"]
    if "inputs_id" in df.columns:
        if set(df.inputs_id.astype(str)) != {inputs_id(identity)}:
            return "its inputs changed (checkpoint, images or subset)"
    elif identity.get("detector_inputs"):  # rows of that age never read such a file
        return f"written without input ids, before the detector read {', '.join(identity['detector_inputs'])}"
    elif not _legacy_matches(ok, identity):
        return "written without input ids, and its checkpoint sha256 or image counts differ"
    try:
        values = ok[[m for m in METRICS if m in ok.columns]].to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        return "a metric column is not numeric"
    if len(ok) and (values.size == 0 or not np.isfinite(values).all()):
        return "a metric is missing or not finite"
    return None


def _legacy_matches(ok: pd.DataFrame, identity: dict) -> bool:
    """Rows stored before input ids (format 1): the checkpoint sha256 and every image count must match (archives
    and the exact subsets are sha256-checked when loaded, so equal counts mean equal images)."""
    try:
        return bool(len(ok)) and all(
            r.checkpoint_sha256 == identity["checkpoint"] and int(r.n_id) == identity["id"]["n"]
            and identity["ood"].get(r.ood_dataset) is not None and int(r.n_ood) == identity["ood"][r.ood_dataset]["n"]
            for r in ok.itertuples())
    except (AttributeError, TypeError, ValueError):
        return False


def identity_columns(identity: dict) -> dict[str, str]:
    return {"inputs_id": inputs_id(identity), "inputs": json.dumps(identity, sort_keys=True)}
