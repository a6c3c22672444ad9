"""Score one image set with any detector type, from cached representations where the type allows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from oodbench.data.base import ImageSet
from oodbench.detectors.base import Detector
from oodbench.errors import OodbenchError
from oodbench.runner.forward import Representations, map_batches


@dataclass
class ScoringContext:
    model: nn.Module
    device: torch.device
    batch_size: int
    num_workers: int | str = 0  # DataLoader decode workers for detectors that run the network (runner.forward)


def _from_logits(det: Detector, reps: Representations, data: ImageSet, ctx: ScoringContext) -> torch.Tensor:
    return det.score_logits(reps.logits)


def _from_features(det: Detector, reps: Representations, data: ImageSet, ctx: ScoringContext) -> torch.Tensor:
    return det.score_features(reps.features.to(ctx.device), ctx.model.head)


def _from_model(det: Detector, reps: Representations, data: ImageSet, ctx: ScoringContext) -> torch.Tensor:
    parts = map_batches(data, partial(det.score_batch, ctx.model), ctx.device, ctx.batch_size, f"{det} {data.name}",
                        ctx.num_workers)
    return torch.cat(parts)


SCORERS: dict[str, Callable[..., torch.Tensor]] = {
    "logits": _from_logits,
    "features": _from_features,
    "model": _from_model,
}


def score_set(
    det: Detector, reps: Representations | None, data: ImageSet, ctx: ScoringContext, detector_name: str
) -> np.ndarray:
    """(N,) float64 scores; NaN or inf is an error, never a silently wrong metric."""
    with torch.no_grad() if det.consumes != "model" else torch.enable_grad():
        scores = SCORERS[det.consumes](det, reps, data, ctx).detach().double().cpu().numpy()
    bad = ~np.isfinite(scores)
    if bad.any():
        raise OodbenchError(
            f"detector {detector_name} produced {int(bad.sum())} non-finite scores on {data.name}; "
            "check its hyper-parameters (e.g. a temperature of 0) or the checkpoint"
        )
    return scores
