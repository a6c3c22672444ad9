"""One CLI cell (``run.py`` / ``oodbench``): a composed config → the engine (:mod:`oodbench.runner.evaluation`) →
rows written through the store; a stored cell with the same identity and inputs is served instead.

The cell's run name comes from its config (:func:`oodbench.store.derive_run_name`), its inputs id from the
checkpoint and image sets actually loaded (:func:`oodbench.store.inputs_identity`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from oodbench.data.base import ImageSet
from oodbench.data.files import atomic_savez, remember_digests_in, sha256_file
from oodbench.errors import DataNotAvailable, OodbenchError
from oodbench.paths import resolve
from oodbench.runner.build import build, meta
from oodbench.runner.cache import RepresentationCache
from oodbench.runner.checks import write_failure
from oodbench.runner.evaluation import DetectorSpec, Evaluation
from oodbench.runner.fit import check_validation_split
from oodbench.runner.forward import resolve_device, set_tf32
from oodbench.runner.model import checkpoint_file, checkpoint_reference, describe_checkpoint, load_model
from oodbench.runner.provenance import git_commit
from oodbench.runner.session import Session, reuse_session
from oodbench.store import Store, config_identity, inputs_id, stable_hash, write_csv, write_records

log = logging.getLogger("oodbench")


def detector_spec(cfg: DictConfig) -> DetectorSpec:
    """The configured detector (``cfg.detector``, its ``meta.per_ood`` overrides per set), built for every set now:
    a bad parameter fails before any model work."""
    name = str(cfg.detector_name)
    spec = DetectorSpec(name, lambda **kw: build(cfg.detector, f"detector {name}", "detector", **kw),
                        meta(cfg.detector).get("per_ood", {}))
    dets = spec.instances(list(cfg.ood))
    if any(d.tunes_per_set for d in dets):
        check_validation_split(cfg.protocol, name)
    return spec


def store_of(cfg: DictConfig) -> Store:
    return Store(resolve("results", cfg.paths.get("results")), resolve("cache", cfg.paths.get("cache")))


def open_session(cfg: DictConfig) -> Session:
    """The model of ``cfg.arch`` on its device with the cache: reused from the previous cell of a sweep when it is the
    same network (its config identity) on the same device."""
    paths = {k: resolve(k, cfg.paths.get(k)) for k in ("weights", "cache")}
    remember_digests_in(paths["cache"])
    device = resolve_device(str(cfg.device))
    set_tf32(bool(cfg.get("tf32", False)))  # numeric mode, recorded in every row (provenance.environment)
    file = checkpoint_file(cfg.arch, paths["weights"])
    file = file if file is not None and file.is_file() else None  # (a missing one: load_model says where to get it)
    key = stable_hash([config_identity(cfg)["arch"], str(paths["weights"]), str(device), bool(cfg.get("tf32")),
                       str(paths["cache"]), bool(cfg.cache), int(cfg.batch_size), str(cfg.get("num_workers")),
                       sha256_file(file) if file is not None else None])  # a replaced file is loaded again

    def make() -> Session:
        cache = RepresentationCache(paths["cache"], enabled=bool(cfg.cache))
        described = describe_checkpoint(cfg.arch, paths["weights"])
        if described is None:  # only loading tells what it is
            model, ckpt = load_model(cfg.arch, paths["weights"], device)
            ref = checkpoint_reference(cfg.arch, ckpt["name"], paths["weights"])
            return Session(model, ckpt, device, cache, cfg.batch_size, cfg.get("num_workers", "auto"), ref)
        ref = checkpoint_reference(cfg.arch, described["name"], paths["weights"])
        return Session(None, described, device, cache, cfg.batch_size, cfg.get("num_workers", "auto"), ref,
                       loader=lambda: load_model(cfg.arch, paths["weights"], device))

    return reuse_session(key if file is not None else None, make)


def load_set(cfg: DictConfig, node: DictConfig, what: str, prefix: str, **overrides: Any) -> ImageSet:
    return build(node, what, prefix, data_dir=str(resolve("data", cfg.paths.get("data"))),
                 cache_dir=str(resolve("cache", cfg.paths.get("cache"))), **overrides)


def load_oods(cfg: DictConfig) -> tuple[dict[str, ImageSet], dict[str, str]]:
    """Every configured OOD set (full, before the protocol's holdout); missing ones → their message."""
    sets, missing = {}, {}
    for ood_name, node in cfg.ood.items():
        try:
            sets[ood_name] = load_set(cfg, node, f"OOD set {ood_name}", f"ood.{ood_name}")
        except DataNotAvailable as err:
            log.warning("skipped %s: %s", ood_name, err)
            missing[ood_name] = str(err)
        except OodbenchError as err:  # a corrupt archive or bad files: this set fails, the others still run
            log.error("skipped %s: %s", ood_name, err)
            missing[ood_name] = f"unusable: {err}"
    return sets, missing


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """What every row records as ``config``: the resolved config without Hydra's node and page declarations."""
    keep = [k for k in cfg if k not in ("hydra", "table", "paper")]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keep), resolve=True)  # type: ignore[return-value]


def run(cfg: DictConfig, out: Path) -> tuple[list[dict[str, Any]], bool]:
    """Execute one cell; return its rows (also written to ``out`` and the store) and whether they were served (then
    nothing was loaded: no network, no pixel)."""
    spec = detector_spec(cfg)
    store = store_of(cfg)
    s = open_session(cfg)
    for det in spec.instances(list(cfg.ood)):
        det.bind(s.reference)
    oods, missing = load_oods(cfg)
    ev = Evaluation(s, load_set(cfg, cfg.id, f"ID set {cfg.id.name}", "id"), oods, missing, cfg.protocol,
                    fit_set=lambda: load_set(cfg, cfg.id, f"ID train set {cfg.id.name}", "id", split="train"),
                    num_classes=meta(cfg.id).get("num_classes"), config=resolved_config(cfg))
    identity = ev.inputs(spec.instances(list(cfg.ood)))
    stored = store.result_path(cfg.result_set, cfg.run_name, git_commit())
    if not cfg.rerun and "+dirty" not in stored.name:
        previous = store.served(stored, list(cfg.ood), identity)
        if previous is not None:
            for r in previous:  # a set missing then and now: today's reason (another folder, another bad file)
                if r["status"] != "ok":
                    r["message"] = missing.get(r["ood_dataset"], r.get("message", ""))
            write_records(previous, out / "metrics.csv")
            kept = store.scores_path(cfg.run_name, inputs_id(identity))
            if kept.is_file():  # the per-image scores too (paired comparisons in a sweep summary read them)
                shutil.copyfile(kept, out / "scores.npz")
            return previous, True
    rows, scores = ev.run(spec)
    _store(store, stored, rows, scores, out)
    return rows, False


def _store(store: Store, path: Path, rows: list[dict[str, Any]], scores: dict[str, np.ndarray], out: Path) -> None:
    """Rows + scores in the job's dir, then through the store (kept scores, then the rows: what resume reads)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    write_csv(df, out / "metrics.csv")
    try:
        atomic_savez(out / "scores.npz", **scores)
        store.write(path, df, scores)
    except OSError as err:
        raise write_failure(err, out, "the scores") from None
