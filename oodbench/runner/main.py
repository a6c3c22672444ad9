"""One run: ID set × checkpoint × detector × list of OOD sets → tidy result rows with provenance.

Flow: load the checkpoint (sha256-pinned) → load ID test set and each OOD set, apply the protocol's
holdout/subsample → one cached forward pass per set (logits + penultimate features) → every detector scores
from what it consumes → metrics (+ bootstrap noise) → rows written atomically.
"""

from __future__ import annotations

import logging
import shutil
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
from oodbench.metrics import id_accuracy
from oodbench.runner.build import build, meta
from oodbench.runner.checks import write_failure
from oodbench.runner.evaluate import evaluate_pair
from oodbench.runner.fit import check_validation_split, fit_detector, fit_for_set
from oodbench.runner.provenance import environment, stable_hash, write_csv
from oodbench.runner.scoring import score_set
from oodbench.runner.session import Session
from oodbench.runner.store import identity_columns, inputs_id, inputs_identity, load_stored, result_path, scores_path

log = logging.getLogger("oodbench")


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
    if holdout and len(full) - holdout < p.min_id_after_holdout and p.get("id_holdout_fallback") == "half":
        holdout = len(full) // 2
        full = full.select(np.arange(len(full)), note=f"protocol holdout of {p.id_holdout} ID images replaced by "
                           f"the first half ({holdout}): only {len(full)} available")
    elif holdout and len(full) - holdout < p.min_id_after_holdout:
        full = full.select(
            np.arange(len(full)),
            note=f"protocol holdout of the first {holdout} ID images not applied: only {len(full)} available; "
            "all are scored (the detector's hyper-parameters are fixed, nothing is tuned on them)",
        )
        holdout = 0
    s.id_val = full.select(np.arange(holdout), note="ID validation split") if holdout else None
    return protocol_subset(full, holdout=holdout, max_images=p.max_id, seed=p.seed)


def _detector_for(cfg: DictConfig, ood_name: str, built: dict[str, Detector]) -> Detector:
    overrides = meta(cfg.detector).get("per_ood", {}).get(ood_name, {})
    key = stable_hash(overrides)
    if key not in built:
        built[key] = build(cfg.detector, f"detector {cfg.detector_name}", **overrides)
    return built[key]


def _detectors(cfg: DictConfig) -> dict[str, Detector]:
    """Every detector the run needs (one per distinct per-set override), built before any model work so a bad
    parameter costs nothing."""
    built: dict[str, Detector] = {}
    for ood_name in cfg.ood:
        _detector_for(cfg, ood_name, built)
    return built


def _load_oods(s: Session) -> tuple[dict[str, ImageSet], dict[str, str]]:
    """Every configured OOD set (full, before the protocol's holdout); missing ones → their message."""
    sets, missing = {}, {}
    for ood_name, node in s.cfg.ood.items():
        try:
            sets[ood_name] = s.load_set(node, f"OOD set {ood_name}")
        except DataNotAvailable as err:
            log.warning("skipped %s: %s", ood_name, err)
            missing[ood_name] = str(err)
        except OodbenchError as err:  # a corrupt archive or bad files: this set fails, the others still run
            log.error("skipped %s: %s", ood_name, err)
            missing[ood_name] = f"unusable: {err}"
    return sets, missing


def _check_sizes(id_set: ImageSet, oods: dict[str, ImageSet]) -> None:
    """Every set must have the ID set's image size (the network's input); a silent mismatch gives nonsense."""
    want = tuple(id_set.images.shape[1:3])
    for name, data in oods.items():
        got = tuple(data.images.shape[1:3])
        if got != want:
            raise OodbenchError(
                f"OOD set {name} has {got[0]}x{got[1]} images but the network takes {want[0]}x{want[1]} (the ID set "
                f"{id_set.name}'s size); use OOD sets made for this resolution, or resize the set explicitly "
                "(folder sets: ood.<name>.size=...)"
            )


def run(cfg: DictConfig) -> tuple[pd.DataFrame, bool]:
    """Execute one run; return its rows (also written to disk) and whether they were served from the store."""
    t0 = time.time()
    detectors = _detectors(cfg)
    if any(d.tunes_per_set for d in detectors.values()):
        check_validation_split(cfg)
    s = Session(cfg)
    for det in detectors.values():
        det.bind(s.reference)
    id_set = _id_set(s)
    p = cfg.protocol
    fulls, missing = _load_oods(s)
    _check_sizes(id_set, fulls)
    scored = {k: protocol_subset(v, holdout=p.ood_holdout, max_images=p.max_ood, seed=p.seed) for k, v in fulls.items()}
    used = {k: v for det in detectors.values() for k, v in det.inputs().items()}
    identity = inputs_identity(s.checkpoint["sha256"], id_set, {k: scored.get(k) for k in cfg.ood}, used)
    stored = result_path(cfg)
    if not cfg.rerun and "+dirty" not in stored.name:
        previous = load_stored(stored, list(cfg.ood), identity)
        if previous is not None:
            kept = scores_path(cfg, inputs_id(identity))
            if kept.is_file():  # the per-image scores too (paired comparisons in a sweep summary read them)
                shutil.copyfile(kept, Path.cwd() / "scores.npz")
            return previous, True
    if not fulls:
        raise OodbenchError("no OOD set could be evaluated: " + " | ".join(missing.values()))
    id_reps = s.representations(id_set)
    id_acc = id_accuracy(id_reps.logits.numpy(), id_set.labels) if id_set.labels is not None else None
    log.info("ID %s | accuracy %s | checkpoint %s (sha256 %s)", id_set.describe(),
             "n/a (no labels)" if id_acc is None else f"{100 * id_acc:.2f}%", s.checkpoint["name"],
             s.checkpoint["sha256"][:12])

    id_scores: dict[Detector, np.ndarray] = {}  # keyed by the object: per-set clones never share an entry
    fitted: set[Detector] = set()
    base = dict(_base_row(cfg, s, id_set, id_acc), **identity_columns(identity))
    rows, scores_out = [], {}
    for ood_name in cfg.ood:
        row = dict(base, ood_dataset=ood_name)
        if ood_name in missing:
            rows.append(dict(row, status="not_available", message=missing[ood_name]))
            continue
        det = _detector_for(cfg, ood_name, detectors)
        if det.needs_fit and det not in fitted:
            fit_detector(det, s)
            fitted.add(det)
        det = fit_for_set(det, s, fulls[ood_name])
        ood = scored[ood_name]
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
    df = pd.DataFrame(rows)
    df["run_seconds"] = round(time.time() - t0, 1)
    df["cache"] = f"hits={s.cache.hits} misses={s.cache.misses}"
    _store(cfg, df, scores_out)
    return df, False


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True, default=str)


def _base_row(cfg: DictConfig, s: Session, id_set: ImageSet, id_acc: float | None) -> dict[str, Any]:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    resolved.pop("table", None)  # a paper spec's page declaration (configs/paper/*.yaml), not a run setting
    return {
        "experiment": cfg.result_set or "",
        "run_name": cfg.run_name,
        "id_dataset": cfg.id.name,
        "arch": cfg.arch.name,
        "checkpoint": s.checkpoint["name"],
        "checkpoint_sha256": s.checkpoint["sha256"],
        "training": _json(s.checkpoint["training"]) if s.checkpoint.get("training") else "",
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
    kept = scores_path(cfg, str(df.inputs_id.iloc[0]))
    try:
        atomic_savez(out / "scores.npz", **scores)
        kept.parent.mkdir(parents=True, exist_ok=True)
        atomic_savez(kept, **scores)
    except OSError as err:
        raise write_failure(err, out, "the scores") from None
    write_csv(df, result_path(cfg))
