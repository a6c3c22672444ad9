"""Training and fine-tuning (``python train.py``): classifier, energy fine-tuning, Outlier Exposure, MCD.

``losses`` (pure loss functions), ``data`` (ID set, outlier pool, seeded augmented batches), ``methods`` (one
class per method; the two-head network is ``oodbench.models.two_head``), ``loop`` (the epoch loop and
checkpoints), ``app`` (config -> objects; :func:`main`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig


def main(cfg: DictConfig) -> Path:
    """Run the training job described by the Hydra config ``cfg``; see :func:`oodbench.train.app.main`."""
    from oodbench.train.app import main as _main

    return _main(cfg)
