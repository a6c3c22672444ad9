"""Resolve the ``arch`` config to a loaded, sha256-checked classifier on the run's device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from oodbench.data.files import sha256_file
from oodbench.detectors.base import CheckpointReference
from oodbench.errors import CheckpointError
from oodbench.models.registry import CHECKPOINTS, load_classifier, load_torchvision_classifier
from oodbench.models.torchvision_nets import hub_hash_prefix
from oodbench.runner.build import build


def load_model(arch: DictConfig, weights_dir: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """``arch.checkpoint`` is a registered name (see ``oodbench.models.registry``) or a file path."""
    if arch.get("_target_"):  # an arch config with its own loader (efficientnet_lite0, timm): it returns both
        model, prov = build(arch, f"arch {arch.name}", "arch", weights_dir=str(weights_dir))
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


def checkpoint_file(arch: DictConfig, weights_dir: Path) -> Path | None:
    """The file ``load_model`` will read for ``arch``, when it can be told without loading (None otherwise: torch hub
    lookups, a loader's own packaged file); used to key a reused session by the file's content."""
    ckpt = str(arch.get("checkpoint", ""))
    spec = CHECKPOINTS.get(ckpt)
    if spec is not None:
        return None if hub_hash_prefix(spec.filename) else Path(weights_dir) / spec.filename
    path = Path(ckpt).expanduser()
    if not path.is_absolute() and not path.exists():
        path = Path(weights_dir) / path
    return path if path.is_file() else None


def describe_checkpoint(arch: DictConfig, weights_dir: Path) -> dict[str, Any] | None:
    """Name, sha256, arch and class count of the checkpoint ``load_model`` will load, without loading it (the file's
    sha256 is remembered under its stat signature): what a stored result is checked against before any model work.
    None when only loading can tell (a loader's own file, a torch hub file, a missing or mismatching file: loading
    then reports it)."""
    file = checkpoint_file(arch, weights_dir)
    if arch.get("_target_") or file is None or not file.is_file():
        return None
    digest = sha256_file(file)
    ckpt = str(arch.get("checkpoint", ""))
    spec = CHECKPOINTS.get(ckpt) or next((c for c in CHECKPOINTS.values() if c.sha256 == digest), None)
    mismatch = spec is not None and (bool(spec.sha256 and digest != spec.sha256)
                                     or (ckpt in CHECKPOINTS and spec.arch != arch.name))
    if mismatch:
        return None
    return {"name": spec.name if spec else file.stem, "sha256": digest, "arch": spec.arch if spec else arch.name,
            "num_classes": spec.num_classes if spec else None, "path": str(file)}


def checkpoint_reference(arch: DictConfig, name: str, weights_dir: Path) -> CheckpointReference:
    """What the registry says the authors published beside the checkpoint (e.g. DICE's mean training feature)."""
    spec = CHECKPOINTS.get(str(arch.get("checkpoint", "")))
    if spec is None or not spec.mean_feature:
        return CheckpointReference(name, weights_dir)
    return CheckpointReference(name, weights_dir, weights_dir / spec.mean_feature, spec.mean_feature_url)
