"""One run: ID set × checkpoint × detector × list of OOD sets → tidy result rows with provenance.

Flow: load the checkpoint (sha256-pinned) → load ID test set and each OOD set, apply the protocol's
holdout/subsample → one cached forward pass per set (logits + penultimate features) → every detector scores
from what it consumes → metrics (+ bootstrap noise) → rows written atomically.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from oodbench.data.base import ImageSet, protocol_subset
from oodbench.data.files import atomic_savez
from oodbench.detectors.base import Detector
from oodbench.errors import DataNotAvailable, OodbenchError
from oodbench.paths import resolve
from oodbench.runner.build import build, meta
from oodbench.runner.cache import RepresentationCache, cache_key
from oodbench.runner.evaluate import evaluate_pair
from oodbench.runner.fit import fit_detector, fit_for_set
from oodbench.runner.forward import Representations, extract, numeric_mode, resolve_device, set_tf32
from oodbench.runner.model import load_model
from oodbench.runner.provenance import environment, stable_hash, write_csv
from oodbench.runner.provenance import git_commit as environment_commit
from oodbench.runner.scoring import ScoringContext, score_set

log = logging.getLogger("oodbench")


class Session:
    """What a run shares across sets and detectors: paths, device, model, cache."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.paths = {k: resolve(k, cfg.paths.get(k)) for k in ("data", "weights", "cache", "results")}
        self.device = resolve_device(cfg.device)
        set_tf32(bool(cfg.get("tf32", False)))  # numeric mode, recorded in every row (provenance.environment)
        self.model, self.checkpoint = load_model(cfg.arch, self.paths["weights"], self.device)
        self.cache = RepresentationCache(self.paths["cache"], enabled=cfg.cache)
        self.ctx = ScoringContext(self.model, self.device, cfg.batch_size)

    def load_set(self, node: DictConfig, what: str, **overrides: Any) -> ImageSet:
        return build(node, what, data_dir=str(self.paths["data"]), cache_dir=str(self.paths["cache"]), **overrides)

    def representations(self, data: ImageSet) -> Representations:
        key = cache_key(
            checkpoint=self.checkpoint["sha256"], data=data.content_id, indices=data.index_digest(),
            n=len(data), transform="pixels01", layers="logits+penultimate", dtype="float32",
            **({"numeric": numeric_mode()} if self.device.type == "cuda" else {}),  # TF32 changes GPU numbers
        )
        return self.cache.get_or_compute(
            key, lambda: extract(self.model, data, self.device, self.cfg.batch_size), data.name
        )


def _id_set(s: Session) -> ImageSet:
    p = s.cfg.protocol
    full = s.load_set(s.cfg.id, f"ID set {s.cfg.id.name}")
    classes = meta(s.cfg.id).get("num_classes")
    if classes is not None and classes != s.checkpoint["num_classes"]:
        raise OodbenchError(
            f"checkpoint {s.checkpoint['name']} has {s.checkpoint['num_classes']} classes but ID set "
            f"{s.cfg.id.name} has {classes}; pick the matching checkpoint (arch.weights=..., id=...)"
        )
    holdout = p.id_holdout
    if holdout and len(full) - holdout < p.min_id_after_holdout:
        full = full.select(
            np.arange(len(full)),
            note=f"protocol holdout of the first {holdout} ID images not applied: only {len(full)} available; "
            "all are scored (the detector's hyper-parameters are fixed, nothing is tuned on them)",
        )
        holdout = 0
    return protocol_subset(full, holdout=holdout, max_images=p.max_id, seed=p.seed)


def _detector_for(cfg: DictConfig, ood_name: str, built: dict[str, Detector]) -> Detector:
    overrides = meta(cfg.detector).get("per_ood", {}).get(ood_name, {})
    key = stable_hash(overrides)
    if key not in built:
        built[key] = build(cfg.detector, f"detector {cfg.detector_name}", **overrides)
    return built[key]


def run(cfg: DictConfig) -> pd.DataFrame:
    """Execute one run and return its rows (also written to disk)."""
    t0 = time.time()
    s = Session(cfg)
    id_set = _id_set(s)
    id_reps = s.representations(id_set)
    id_acc = float((id_reps.logits.argmax(1).numpy() == id_set.labels).mean()) if id_set.labels is not None else None
    log.info("ID %s | accuracy %s | checkpoint %s (sha256 %s)", id_set.describe(),
             "n/a (no labels)" if id_acc is None else f"{100 * id_acc:.2f}%", s.checkpoint["name"],
             s.checkpoint["sha256"][:12])

    detectors: dict[str, Detector] = {}
    id_scores: dict[Detector, np.ndarray] = {}  # keyed by the object: per-set clones never share an entry
    base = _base_row(cfg, s, id_set, id_acc)
    rows, scores_out = [], {}
    for ood_name, node in cfg.ood.items():
        row = dict(base, ood_dataset=ood_name)
        try:
            ood = s.load_set(node, f"OOD set {ood_name}")
        except DataNotAvailable as err:
            log.warning("skipped %s: %s", ood_name, err)
            rows.append(dict(row, status="not_available", message=str(err)))
            continue
        p = cfg.protocol
        det = _detector_for(cfg, ood_name, detectors)
        if det.needs_fit and not getattr(det, "_fitted", False):
            fit_detector(det, s)
        det = fit_for_set(det, s, ood)
        ood = protocol_subset(ood, holdout=p.ood_holdout, max_images=p.max_ood, seed=p.seed)
        t_set = time.time()
        if det not in id_scores:
            id_scores[det] = score_set(det, id_reps, id_set, s.ctx, cfg.detector_name)
        reps = s.representations(ood) if det.consumes != "model" else None  # no pass a detector won't read
        ood_scores = score_set(det, reps, ood, s.ctx, cfg.detector_name)
        metrics = evaluate_pair(id_scores[det], ood_scores, det, cfg, s.checkpoint["num_classes"])
        scores_out[f"id__{ood_name}"], scores_out[f"ood__{ood_name}"] = id_scores[det], ood_scores
        rows.append(dict(
            row, status="ok", message="", detector_params=_json(det.params), ood_source=ood.describe(),
            ood_notes="; ".join(ood.notes), n_ood=len(ood), seconds=round(time.time() - t_set, 2), **metrics,
        ))
    if not any(r["status"] == "ok" for r in rows):
        raise OodbenchError("no OOD set could be evaluated: " + " | ".join(r["message"] for r in rows))
    df = pd.DataFrame(rows)
    df["run_seconds"] = round(time.time() - t0, 1)
    df["cache"] = f"hits={s.cache.hits} misses={s.cache.misses}"
    _store(cfg, df, scores_out)
    return df


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True, default=str)


def _base_row(cfg: DictConfig, s: Session, id_set: ImageSet, id_acc: float | None) -> dict[str, Any]:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    return {
        "experiment": cfg.result_set or "",
        "run_name": cfg.run_name,
        "id_dataset": cfg.id.name,
        "arch": cfg.arch.name,
        "checkpoint": s.checkpoint["name"],
        "checkpoint_sha256": s.checkpoint["sha256"],
        "detector": cfg.detector_name,
        "protocol": cfg.protocol.name,
        "id_source": id_set.describe(),
        "id_notes": "; ".join(id_set.notes),
        "n_id": len(id_set),
        "id_acc": id_acc,
        "seed": cfg.protocol.seed,
        **environment(s.device),
        "config": _json(resolved),
    }


def _store(cfg: DictConfig, df: pd.DataFrame, scores: dict[str, np.ndarray]) -> None:
    """Rows + scores in the job's dir, and the rows in the result store (what resume and tables read)."""
    out = Path.cwd()
    write_csv(df, out / "metrics.csv")
    atomic_savez(out / "scores.npz", **scores)
    write_csv(df, result_path(cfg))


def result_path(cfg: DictConfig) -> Path:
    """Where a cell's rows are stored: ``results/runs/<result_set>/`` for presets (committed, the tables'
    source), else a per-user store in the cache dir whose names also carry the code's git commit."""
    if cfg.result_set:
        return resolve("results", cfg.paths.get("results")) / "runs" / cfg.result_set / f"{cfg.run_name}.csv"
    commit = environment_commit()
    return resolve("cache", cfg.paths.get("cache")) / "runs" / f"{cfg.run_name}-{commit[:12]}.csv"
