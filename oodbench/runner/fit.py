"""Fit a detector on ID training representations (served by the same cache as the test sets)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from oodbench.data.base import protocol_subset
from oodbench.detectors.base import Detector, FitData
from oodbench.errors import DataNotAvailable, OodbenchError

if TYPE_CHECKING:
    from oodbench.runner.main import Session

log = logging.getLogger("oodbench")


def fit_detector(det: Detector, s: Session) -> None:
    """Load the ID set's training split, extract (cached) features, and call ``det.fit``."""
    try:
        train = s.load_set(s.cfg.id, f"ID train set {s.cfg.id.name}", split="train")
    except DataNotAvailable as err:
        raise OodbenchError(f"detector {s.cfg.detector_name} needs ID training features, but {err}") from None
    if train.labels is None:
        raise OodbenchError(f"detector {s.cfg.detector_name} needs labelled ID training data; {train.name} has none")
    train = protocol_subset(train, max_images=s.cfg.protocol.max_fit, seed=s.cfg.protocol.seed)
    reps = s.representations(train)
    log.info("fit %s on %s", s.cfg.detector_name, train.describe())
    det.fit(FitData(reps.features, torch.from_numpy(train.labels), reps.logits, s.model.head, train.describe()))
    det._fitted = True
    det._fit_source = train.describe()
