"""The engine every entry point runs (``run.py`` / ``oodbench`` and :func:`oodbench.evaluate`): one ID set and a list
of OOD sets on one session under one protocol — the sets split as the protocol says, each set's representations
computed once, any number of detectors scored against them, one row per (detector, OOD set) with its provenance.

Flow: protocol holdouts and subsamples → one cached forward pass per set (logits + penultimate features) → every
detector fits (ID-train representations, served by the cache), is tuned per set where it says so, and scores from
what it consumes → metrics (+ bootstrap noise) → rows and per-image scores.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from oodbench.data.base import ImageSet, protocol_subset
from oodbench.detectors.base import Detector
from oodbench.errors import OodbenchError
from oodbench.metrics import id_accuracy
from oodbench.runner.evaluate import evaluate_pair
from oodbench.runner.fit import fit_detector, fit_for_set
from oodbench.runner.provenance import environment
from oodbench.runner.scoring import score_set
from oodbench.runner.session import Session
from oodbench.store import identity_columns, inputs_identity, stable_hash

log = logging.getLogger("oodbench")


@dataclass
class DetectorSpec:
    """A detector as the engine needs it: its name in the rows, a builder (keyword overrides → a fresh detector)
    and the overrides it takes per OOD set (e.g. ODIN's published ε for LSUN crop)."""

    name: str
    build: Callable[..., Detector]
    per_ood: dict[str, dict[str, Any]] = field(default_factory=dict)
    _built: dict[str, Detector] = field(default_factory=dict, repr=False)

    def for_set(self, ood_name: str) -> Detector:
        overrides = self.per_ood.get(ood_name, {})
        key = stable_hash(overrides)
        if key not in self._built:
            self._built[key] = self.build(**overrides)
        return self._built[key]

    def instances(self, ood_names: list[str]) -> list[Detector]:
        """Every distinct detector the sets need (built before any model work, so a bad parameter costs nothing)."""
        return list({id(d): d for d in (self.for_set(n) for n in ood_names)}.values())


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


class Evaluation:
    """One ID set × OOD sets on one :class:`Session` under ``protocol`` (a mapping with the keys of
    ``oodbench/conf/protocol/*.yaml``). ``fit_set`` returns the labelled ID training split (called only when a detector
    fits); ``num_classes`` of the ID set is checked against the model's; ``config`` is recorded in every row."""

    def __init__(self, session: Session, id_full: ImageSet, oods: Mapping[str, ImageSet], missing: Mapping[str, str],
                 protocol: Mapping[str, Any], fit_set: Callable[[], ImageSet] | None = None,
                 num_classes: int | None = None, config: Mapping[str, Any] | None = None) -> None:
        self.s, self.p, self.fit_set, self.num_classes = session, protocol, fit_set, num_classes
        self.config = dict(config or {})
        model_classes = session.checkpoint.get("num_classes")
        if num_classes is not None and model_classes is not None and num_classes != model_classes:
            raise OodbenchError(
                f"checkpoint {session.checkpoint['name']} has {model_classes} classes but ID set {id_full.name} has "
                f"{num_classes}; pick the matching checkpoint (arch.weights=..., id=...)")
        self.id_set, self.id_val = self._split_id(id_full)
        self.fulls, self.missing = dict(oods), dict(missing)
        self._check_sizes()
        p = protocol
        self.scored = {k: protocol_subset(v, holdout=p["ood_holdout"], max_images=p["max_ood"], seed=p["seed"])
                       for k, v in self.fulls.items()}
        self.ood_names = [*self.fulls, *(k for k in self.missing if k not in self.fulls)]
        self._hits, self._misses = session.cache.hits, session.cache.misses
        self._id_scores: dict[int, tuple[Detector, np.ndarray]] = {}  # the detector is kept: its id stays unique
        self._fitted: set[int] = set()

    # ------------------------------------------------------------------------------------------------ the sets
    def _split_id(self, full: ImageSet) -> tuple[ImageSet, ImageSet | None]:
        p = self.p
        holdout, floor = p.get("id_holdout") or 0, p.get("min_id_after_holdout", 0)
        if holdout and len(full) - holdout < floor and p.get("id_holdout_fallback") == "half":
            holdout = len(full) // 2
            full = full.select(np.arange(len(full)), note=f"protocol holdout of {p['id_holdout']} ID images replaced "
                               f"by the first half ({holdout}): only {len(full)} available")
        elif holdout and len(full) - holdout < floor:
            full = full.select(np.arange(len(full)), note=(
                f"protocol holdout of the first {holdout} ID images not applied: only {len(full)} available; all are "
                "scored (the detector's hyper-parameters are fixed, nothing is tuned on them)"))
            holdout = 0
        val = full.select(np.arange(holdout), note="ID validation split") if holdout else None
        return protocol_subset(full, holdout=holdout, max_images=p.get("max_id"), seed=p["seed"]), val

    def _check_sizes(self) -> None:
        """Every set must have the ID set's image size (the network's input); a silent mismatch gives nonsense."""
        want = tuple(self.id_set.images.shape[1:3])
        for name, data in self.fulls.items():
            got = tuple(data.images.shape[1:3])
            if got != want:
                raise OodbenchError(
                    f"OOD set {name} has {got[0]}x{got[1]} images but the network takes {want[0]}x{want[1]} (the ID "
                    f"set {self.id_set.name}'s size); use OOD sets made for this resolution, or resize the set "
                    "explicitly (folder sets: ood.<name>.size=...)")

    def inputs(self, detectors: list[Detector]) -> dict[str, Any]:
        """The inputs identity of these detectors' rows (:func:`oodbench.store.inputs_identity`)."""
        used = {k: v for det in detectors for k, v in det.inputs().items()}
        return inputs_identity(self.s.checkpoint["sha256"], self.id_set,
                               {k: self.scored.get(k) for k in self.ood_names}, used)

    # ------------------------------------------------------------------------------------------------ the model
    @cached_property
    def id_reps(self):  # noqa: ANN201 - Representations
        reps = self.s.representations(self.id_set)
        width = int(reps.logits.shape[1])
        if self.num_classes is not None and width != self.num_classes:
            raise OodbenchError(f"checkpoint {self.s.checkpoint['name']} has {width} classes but ID set "
                                f"{self.id_set.name} has {self.num_classes}; pick the matching checkpoint "
                                "(arch.weights=..., id=...)")
        return reps

    @cached_property
    def id_acc(self) -> float | None:
        if self.id_set.labels is None:
            return None
        acc = id_accuracy(self.id_reps.logits.numpy(), self.id_set.labels)
        log.info("ID %s | accuracy %.2f%% | checkpoint %s (sha256 %s)", self.id_set.describe(), 100 * acc,
                 self.s.checkpoint["name"], str(self.s.checkpoint["sha256"])[:12])
        return acc

    def base_row(self) -> dict[str, Any]:
        ck = self.s.checkpoint
        return {
            "experiment": self.config.get("result_set") or "", "run_name": self.config.get("run_name") or "",
            "id_dataset": self.id_set.name, "arch": ck.get("arch", ""), "checkpoint": ck["name"],
            "checkpoint_sha256": ck["sha256"], "training": _json(ck["training"]) if ck.get("training") else "",
            "protocol": self.p.get("name", ""), "id_source": self.id_set.describe(),
            "id_notes": "; ".join(self.id_set.notes), "n_id": len(self.id_set), "id_acc": self.id_acc,
            "seed": self.p["seed"], **environment(self.s.device), "config": _json(self.config),
        }

    # ------------------------------------------------------------------------------------------------ scoring
    def run(self, spec: DetectorSpec) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
        """Rows (one per OOD set, ``not_available`` for missing ones) and per-image scores of one detector spec."""
        t0, c0 = time.time(), time.process_time()
        if not self.fulls:
            raise OodbenchError("no OOD set could be evaluated: " + " | ".join(self.missing.values()))
        dets = spec.instances(self.ood_names)
        base = dict(self.base_row(), detector=spec.name, **identity_columns(self.inputs(dets)))
        rows, scores = [], {}
        for ood_name in self.ood_names:
            row = dict(base, ood_dataset=ood_name)
            if ood_name in self.missing:
                rows.append(dict(row, status="not_available", message=self.missing[ood_name]))
                continue
            det = spec.for_set(ood_name)
            if det.needs_fit and id(det) not in self._fitted:
                fit_detector(det, self, spec.name)
                self._fitted.add(id(det))
            det = fit_for_set(det, self, self.fulls[ood_name], spec.name)
            ood, t_set = self.scored[ood_name], time.time()
            if id(det) not in self._id_scores:
                self._id_scores[id(det)] = det, score_set(det, self.id_reps, self.id_set, self.s.ctx, spec.name)
            reps = self.s.representations(ood) if det.consumes != "model" else None  # no pass a detector won't read
            ood_scores = score_set(det, reps, ood, self.s.ctx, spec.name)
            id_scores = self._id_scores[id(det)][1]
            metrics = evaluate_pair(id_scores, ood_scores, det, self.p, spec.name,
                                    int(self.s.checkpoint.get("num_classes") or self.id_reps.logits.shape[1]))
            scores[f"id__{ood_name}"], scores[f"ood__{ood_name}"] = id_scores, ood_scores
            rows.append(dict(
                row, status="ok", message="", detector_params=_json(det.params), ood_source=ood.describe(),
                ood_notes="; ".join(ood.notes), n_ood=len(ood), seconds=round(time.time() - t_set, 2), **metrics))
        for r in rows:
            r["run_seconds"] = round(time.time() - t0, 1)
            r["run_cpu_seconds"] = round(time.process_time() - c0, 3)  # this cell's own work, all threads
            r["cache"] = f"hits={self.s.cache.hits - self._hits} misses={self.s.cache.misses - self._misses}"
        return rows, scores
