"""Fitting detectors: on ID training representations (served by the cache), or — for detectors tuned on a
validation split of each OOD set, like Lee et al.'s feature-ensemble weights — with the model itself."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import torch

from oodbench.data.base import ImageSet, protocol_subset
from oodbench.detectors.base import Detector, FitData, PerSetData
from oodbench.errors import DataNotAvailable, OodbenchError
from oodbench.runner.session import Session

log = logging.getLogger("oodbench")


class Evaluation(Protocol):
    """What fitting needs of an :class:`~oodbench.runner.evaluation.Evaluation`."""

    s: Session
    p: Mapping[str, Any]
    fit_set: Callable[[], ImageSet] | None
    id_val: ImageSet | None


def train_split(ev: Evaluation, detector: str) -> ImageSet:
    if ev.fit_set is None:
        raise OodbenchError(f"detector {detector} fits on labelled ID training data, but none was given "
                            "(the API's fit=...; the CLI reads the ID set's train split)")
    try:
        train = ev.fit_set()
    except DataNotAvailable as err:
        raise OodbenchError(f"detector {detector} needs ID training data, but {err}") from None
    if train.labels is None:
        raise OodbenchError(f"detector {detector} needs labelled ID training data; {train.name} has none")
    return protocol_subset(train, max_images=ev.p.get("max_fit"), seed=ev.p["seed"])


def fit_detector(det: Detector, ev: Evaluation, detector: str) -> None:
    """Extract (cached) features of the ID training split and call ``det.fit``. A detector tuned per OOD set under
    ``protocol.id_val=train_tail`` fits on the split minus its last ``val_n`` images, its ID validation split."""
    train = train_split(ev, detector)
    p, s = ev.p, ev.s
    if det.tunes_per_set and p.get("id_val") == "train_tail":
        n_val = int(p.get("val_n") or 0)
        if not n_val or len(train) <= 2 * n_val:
            raise OodbenchError(f"{len(train)} ID training images are too few for a validation split of {n_val}")
        ev.id_val = train.select(np.arange(len(train) - n_val, len(train)), note="ID validation split")
        train = train.select(np.arange(len(train) - n_val))
    reps = s.representations(train)
    log.info("fit %s on %s", detector, train.describe())
    det.fit(FitData(reps.features, torch.from_numpy(np.asarray(train.labels)), reps.logits, s.model.head,
                    train.describe(), images=train, model=s.model, device=s.device, batch_size=s.batch_size))


def _no_split(protocol: Mapping[str, Any], detector: str) -> OodbenchError:
    return OodbenchError(
        f"{detector} is tuned per OOD set on a validation split; use a protocol that makes one "
        f"(protocol=mahalanobis or mahalanobis_table2: an ID validation split and ood_holdout >= val_n > 0), "
        f"not {protocol.get('name')}"
    )


def check_validation_split(protocol: Mapping[str, Any], detector: str) -> None:
    """A detector tuned per OOD set needs a protocol that makes a validation split: checked before any model work."""
    n_val = int(protocol.get("val_n") or 0)
    has_id = protocol.get("id_val") == "train_tail" or bool(protocol.get("id_holdout"))
    if not n_val or protocol.get("ood_holdout", 0) < n_val or not has_id:
        raise _no_split(protocol, detector)


def fit_for_set(det: Detector, ev: Evaluation, ood_full: ImageSet, detector: str) -> Detector:
    """The detector tuned for this OOD set (``tunes_per_set``: ``fit_per_set`` on the protocol's validation split —
    the first ``val_n`` images of the OOD set, which the holdout keeps out of the test, and the ID images the
    protocol held out), else itself."""
    if not det.tunes_per_set:
        return det
    p, s = ev.p, ev.s
    check_validation_split(p, detector)
    if ev.id_val is None or len(ev.id_val) == 0:
        raise _no_split(p, detector)
    val_ood = ood_full.select(np.arange(min(int(p["val_n"]), len(ood_full))))
    log.info("tune %s for %s on %d ID + %d OOD validation images", detector, ood_full.name, len(ev.id_val),
             len(val_ood))
    return det.fit_per_set(PerSetData(s.model, s.device, s.batch_size, ev.id_val, val_ood, ood_full.name, p["seed"]))
