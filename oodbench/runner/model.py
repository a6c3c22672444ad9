"""Resolve the ``arch`` config to a loaded, sha256-checked classifier on the run's device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from oodbench.detectors.base import CheckpointReference
from oodbench.errors import CheckpointError
from oodbench.models.registry import CHECKPOINTS, load_classifier, load_torchvision_classifier
from oodbench.models.torchvision_nets import hub_hash_prefix
from oodbench.runner.build import build


def load_model(arch: DictConfig, weights_dir: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """``arch.checkpoint`` is a registered name (see ``oodbench.models.registry``) or a file path."""
    if arch.get("_target_"):  # an arch config with its own loader (efficientnet_lite0, timm): it returns both
        model, prov = build(arch, f"arch {arch.name}", weights_dir=str(weights_dir))
        return model.to(device), prov
    ckpt = str(arch.checkpoint)
    if ckpt in CHECKPOINTS:
        spec = CHECKPOINTS[ckpt]
        if spec.arch != arch.name:
            raise CheckpointError(
                f"checkpoint {ckpt} is a {spec.arch}, but arch={arch.name} was asked; use arch={spec.arch} "
                f"or a {arch.name} checkpoint"
            )
        if hub_hash_prefix(spec.filename):  # torchvision weights: weights dir, then the torch hub cache
            model, prov = load_torchvision_classifier(spec, weights_dir, download=bool(arch.get("download", False)))
        else:
            model, prov = load_classifier(spec, weights_dir)
    else:
        path = Path(ckpt).expanduser()
        if not path.is_absolute() and not path.exists():
            path = weights_dir / path
        model, prov = load_classifier(
            None, weights_dir, path=path, arch=arch.name, normalization=arch.get("normalization")
        )
    return model.to(device), prov


def checkpoint_reference(arch: DictConfig, name: str, weights_dir: Path) -> CheckpointReference:
    """What the registry says the authors published beside the checkpoint (e.g. DICE's mean training feature)."""
    spec = CHECKPOINTS.get(str(arch.get("checkpoint", "")))
    if spec is None or not spec.mean_feature:
        return CheckpointReference(name, weights_dir)
    return CheckpointReference(name, weights_dir, weights_dir / spec.mean_feature, spec.mean_feature_url)
