"""Fitting detectors: on ID training representations (served by the cache), or — for detectors tuned on a
validation split of each OOD set, like Lee et al.'s feature-ensemble weights — with the model itself."""

from __future__ import annotations

import logging

import numpy as np
import torch
from omegaconf import DictConfig

from oodbench.data.base import ImageSet, protocol_subset
from oodbench.detectors.base import Detector, FitData, PerSetData
from oodbench.errors import DataNotAvailable, OodbenchError
from oodbench.runner.session import Session

log = logging.getLogger("oodbench")


def train_split(s: Session) -> ImageSet:
    try:
        train = s.load_set(s.cfg.id, f"ID train set {s.cfg.id.name}", split="train")
    except DataNotAvailable as err:
        raise OodbenchError(f"detector {s.cfg.detector_name} needs ID training data, but {err}") from None
    if train.labels is None:
        raise OodbenchError(f"detector {s.cfg.detector_name} needs labelled ID training data; {train.name} has none")
    return protocol_subset(train, max_images=s.cfg.protocol.max_fit, seed=s.cfg.protocol.seed)


def fit_detector(det: Detector, s: Session) -> None:
    """Extract (cached) features of the ID training split and call ``det.fit``. A detector tuned per OOD set under
    ``protocol.id_val=train_tail`` fits on the split minus its last ``val_n`` images, its ID validation split."""
    train = train_split(s)
    p = s.cfg.protocol
    if det.tunes_per_set and p.get("id_val") == "train_tail":
        n_val = int(p.get("val_n") or 0)
        if not n_val or len(train) <= 2 * n_val:
            raise OodbenchError(f"{len(train)} ID training images are too few for a validation split of {n_val}")
        s.id_val = train.select(np.arange(len(train) - n_val, len(train)), note="ID validation split")
        train = train.select(np.arange(len(train) - n_val))
    reps = s.representations(train)
    log.info("fit %s on %s", s.cfg.detector_name, train.describe())
    det.fit(FitData(reps.features, torch.from_numpy(train.labels), reps.logits, s.model.head, train.describe(),
                    images=train, model=s.model, device=s.device, batch_size=s.cfg.batch_size))


def _no_split(cfg: DictConfig) -> OodbenchError:
    return OodbenchError(
        f"{cfg.detector_name} is tuned per OOD set on a validation split; use a protocol that makes one "
        f"(protocol=mahalanobis or mahalanobis_table2: an ID validation split and ood_holdout >= val_n > 0), "
        f"not {cfg.protocol.name}"
    )


def check_validation_split(cfg: DictConfig) -> None:
    """A detector tuned per OOD set needs a protocol that makes a validation split: checked before any model work."""
    p = cfg.protocol
    n_val = int(p.get("val_n") or 0)
    has_id = p.get("id_val") == "train_tail" or bool(p.get("id_holdout"))
    if not n_val or p.ood_holdout < n_val or not has_id:
        raise _no_split(cfg)


def _tune_for_set(det: Detector, s: Session, ood_full: ImageSet) -> Detector:
    """``fit_per_set`` on the protocol's validation split: the first ``val_n`` images of the OOD set (the holdout
    keeps them out of the test) and the ID test images the protocol held out (``Session.id_val``)."""
    p = s.cfg.protocol
    n_val = int(p.get("val_n") or 0)
    check_validation_split(s.cfg)
    if s.id_val is None or len(s.id_val) == 0:
        raise _no_split(s.cfg)
    val_ood = ood_full.select(np.arange(min(n_val, len(ood_full))))
    log.info("tune %s for %s on %d ID + %d OOD validation images", s.cfg.detector_name, ood_full.name,
             len(s.id_val), len(val_ood))
    return det.fit_per_set(PerSetData(s.model, s.device, s.cfg.batch_size, s.id_val, val_ood, ood_full.name, p.seed))


def fit_for_set(det: Detector, s: Session, ood_full: ImageSet) -> Detector:
    """The detector tuned for this OOD set (``tunes_per_set``), else itself."""
    return _tune_for_set(det, s, ood_full) if det.tunes_per_set else det
