"""Detector types, named by what they consume (pytorch-ood style), so one cached pass feeds all of them.

* :class:`LogitDetector` scores from logits alone (MSP, Energy, MaxLogit, ODIN with ε = 0).
* :class:`FeatureDetector` scores from penultimate features, with the classifier head at hand
  (Mahalanobis, KNN, ViM, and activation shaping — ASH, ReAct, DICE — composed with any logit score).
* :class:`ModelDetector` needs the network itself, e.g. gradients w.r.t. the input (ODIN with ε > 0).

Convention: a score is higher for more in-distribution inputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from oodbench.data.base import ImageSet


@dataclass
class FitData:
    """What a detector may fit on: ID training representations (features, labels, logits) and the head."""

    features: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    head: nn.Module
    source: str
    images: ImageSet | None = None
    model: nn.Module | None = None
    device: torch.device | None = None
    batch_size: int = 128


@dataclass(frozen=True)
class CheckpointReference:
    """What a checkpoint's authors published beside it, handed to every detector (``bind``) before any pass:
    ``weights_dir`` (the run's ``paths.weights``, for relative paths in detector configs) and ``mean_feature``
    (their mean penultimate feature over the full ID training set, e.g. DICE's ``*_feat_stat.npy``; None when
    they published none) with ``mean_feature_source`` (where to get it when the file is missing)."""

    checkpoint: str
    weights_dir: Path
    mean_feature: Path | None = None
    mean_feature_source: str = ""


@dataclass
class PerSetData:
    """Handed to ``fit_per_set`` once per OOD set: validation splits the protocol keeps out of the test."""

    model: nn.Module
    device: torch.device
    batch_size: int
    val_id: ImageSet
    val_ood: ImageSet
    ood_name: str
    seed: int


class Detector(ABC):
    """Common interface. ``consumes`` tells the runner what to hand over; ``needs_fit`` whether to call fit."""

    consumes: ClassVar[str]
    needs_fit: ClassVar[bool] = False
    tunes_per_set: ClassVar[bool] = False

    def bind(self, ref: CheckpointReference) -> None:  # noqa: B027 - optional hook
        """Called once the checkpoint is known, before ``needs_fit`` is read (no-op for most detectors)."""

    def inputs(self) -> dict[str, str]:
        """Files besides the checkpoint and the data that the scores depend on, by sha256 (after ``bind``), e.g.
        a published mean feature: part of a stored result's identity, so a changed file is never served."""
        return {}

    def fit(self, data: FitData) -> None:  # noqa: B027 - optional hook
        """Fit on ID training data (no-op for methods that need none)."""

    def metric_hints(self) -> dict[str, float]:
        """Facts the metrics need about the score: ``softmax_temperature`` = T when the score is a softmax
        probability at temperature T (ODIN's threshold grid depends on it); empty otherwise."""
        return {}

    def fit_per_set(self, data: PerSetData) -> Detector:
        """A copy tuned on one OOD set's validation split (``tunes_per_set``); never mutates ``self``."""
        return self

    @property
    def params(self) -> dict:
        """Hyper-parameters that define this detector (recorded in every result row)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class LogitDetector(Detector):
    consumes = "logits"

    @abstractmethod
    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, C) logits → (N,) scores."""


class FeatureDetector(Detector):
    consumes = "features"

    @abstractmethod
    def score_features(self, features: torch.Tensor, head: nn.Module) -> torch.Tensor:
        """(N, D) penultimate features (and the classifier head) → (N,) scores."""


class ModelDetector(Detector):
    consumes = "model"

    @abstractmethod
    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A batch of pixels in [0, 1] → (N,) scores; may use input gradients."""
