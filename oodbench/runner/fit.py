"""Fitting detectors: on ID training representations (served by the cache), or — for detectors tuned on a
validation split of each OOD set, like Lee et al.'s feature-ensemble weights — with the model itself."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

from oodbench.data.base import ImageSet, protocol_subset, to_tensor
from oodbench.detectors.base import Detector, FitData, PerSetData
from oodbench.detectors.distance import MahalanobisEnsemble
from oodbench.errors import DataNotAvailable, OodbenchError
from oodbench.runner.forward import map_batches

if TYPE_CHECKING:
    from oodbench.runner.main import Session

log = logging.getLogger("oodbench")


def _train_split(s: Session) -> ImageSet:
    try:
        train = s.load_set(s.cfg.id, f"ID train set {s.cfg.id.name}", split="train")
    except DataNotAvailable as err:
        raise OodbenchError(f"detector {s.cfg.detector_name} needs ID training data, but {err}") from None
    if train.labels is None:
        raise OodbenchError(f"detector {s.cfg.detector_name} needs labelled ID training data; {train.name} has none")
    return protocol_subset(train, max_images=s.cfg.protocol.max_fit, seed=s.cfg.protocol.seed)


def fit_detector(det: Detector, s: Session) -> None:
    """Extract (cached) features of the ID training split and call ``det.fit``."""
    train = _train_split(s)
    reps = s.representations(train)
    log.info("fit %s on %s", s.cfg.detector_name, train.describe())
    det.fit(FitData(reps.features, torch.from_numpy(train.labels), reps.logits, s.model.head, train.describe(),
                    images=train, model=s.model, device=s.device, batch_size=s.cfg.batch_size))
    det._fitted = True
    det._fit_source = train.describe()


def _fit_mahalanobis_ensemble(det: MahalanobisEnsemble, s: Session, ood_full: ImageSet) -> MahalanobisEnsemble:
    """Lee et al. (2018): Gaussians per layer from ID train; α_l by logistic regression on validation layer
    scores — the last ``protocol.val_n`` ID-train images (kept out of the Gaussians; the ID test subset is too
    small to split) vs the first ``val_n`` images of this OOD set, which the protocol's holdout keeps out of
    the test."""
    p = s.cfg.protocol
    n_val = int(p.get("val_n") or 0)
    if not n_val or p.ood_holdout < n_val:
        raise OodbenchError(
            f"{s.cfg.detector_name} tunes on the first {n_val} images of each OOD set; use protocol=mahalanobis "
            f"(ood_holdout >= val_n > 0), not ood_holdout={p.ood_holdout}, val_n={n_val}"
        )
    if not det._gauss:
        train = _train_split(s)
        if len(train) <= 2 * n_val:
            raise OodbenchError(f"{len(train)} ID training images are too few for a validation split of {n_val}")
        fit, det._val_id = train.select(np.arange(len(train) - n_val)), train.select(
            np.arange(len(train) - n_val, len(train)))
        log.info("fit %s layers on %s", s.cfg.detector_name, fit.describe())
        det.fit_layers(s.model, to_tensor(fit.images).to(s.device), torch.from_numpy(fit.labels), s.cfg.batch_size)
    score = partial(det.layer_scores, s.model)
    layer = lambda data: torch.cat(map_batches(data, score, s.device, s.cfg.batch_size, "layers"))  # noqa: E731
    tuned = copy.deepcopy(det)
    tuned.fit_weights(layer(det._val_id), layer(ood_full.select(np.arange(n_val))), seed=p.seed)
    log.info("%s weights for %s: %s", s.cfg.detector_name, ood_full.name, np.round(tuned.layer_weights, 4).tolist())
    return tuned


# Detectors tuned per OOD set, by type (not by name): the runner calls these before scoring each set.
PER_SET_FITTERS: dict[type, Callable[..., Detector]] = {MahalanobisEnsemble: _fit_mahalanobis_ensemble}


def _tune_for_set(det: Detector, s: Session, ood_full: ImageSet) -> Detector:
    """``fit_per_set`` on the protocol's validation split: the first ``val_n`` images of the OOD set (the holdout
    keeps them out of the test) and the ID test images the protocol held out (``Session.id_val``)."""
    p = s.cfg.protocol
    n_val = int(p.get("val_n") or 0)
    if not n_val or p.ood_holdout < n_val or s.id_val is None or len(s.id_val) == 0:
        raise OodbenchError(
            f"{s.cfg.detector_name} is tuned per OOD set on a validation split; use protocol=mahalanobis_table2 "
            f"(an ID test holdout and ood_holdout >= val_n > 0), not {p.name}"
        )
    val_ood = ood_full.select(np.arange(min(n_val, len(ood_full))))
    log.info("tune %s for %s on %d ID + %d OOD validation images", s.cfg.detector_name, ood_full.name,
             len(s.id_val), len(val_ood))
    return det.fit_per_set(PerSetData(s.model, s.device, s.cfg.batch_size, s.id_val, val_ood, ood_full.name, p.seed))


def fit_for_set(det: Detector, s: Session, ood_full: ImageSet) -> Detector:
    if det.tunes_per_set:
        return _tune_for_set(det, s, ood_full)
    fitter = PER_SET_FITTERS.get(type(det))
    return det if fitter is None else fitter(det, s, ood_full)
