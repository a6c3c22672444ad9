"""Top-1 accuracy of a just-trained network on the ID test sets here (recorded in ``metadata.json``).

* ``exact_test``: ``load_cifar(split='test')`` -- torchvision's official 10,000 test images when present, else the
  exact subset (CIFAR-10: the first 1,017 official test images, byte-exact);
* ``jpeg_test``: the JPEG re-encode of all 10,000 test images (``datasets.<id>.jpeg.test``), the same lossy
  re-encode as the JPEG training set.

``eval.limit`` takes a seeded subset of each (smoke runs). Inference is fp32 in eval mode, batch ``eval.batch_size``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from oodbench.data.base import ImageSet
from oodbench.data.cifar import load_cifar
from oodbench.errors import DataNotAvailable
from oodbench.train.data import limit, load_jpeg_cifar


@torch.no_grad()
def top1(model: nn.Module, data: ImageSet, device: torch.device, batch_size: int = 500) -> float:
    """Fraction of ``data`` whose argmax logit is its label."""
    was = model.training
    model.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        x = data.batch(start, batch_size).to(device)
        pred = model(x).argmax(1).cpu().numpy()
        correct += int((pred == np.asarray(data.labels[start:start + batch_size])).sum())
    model.train(was)
    return correct / max(len(data), 1)


def accuracy_report(model: nn.Module, cfg: DictConfig, ds: DictConfig, paths: dict[str, Path],
                    device: torch.device) -> dict[str, Any]:
    """``{name: {top1, n, source}}`` for each test set that is present (a missing one is recorded as such)."""
    ev = cfg.get("eval") or {}
    n, seed, bs = ev.get("limit"), int(cfg.seed), int(ev.get("batch_size", 500))
    out: dict[str, Any] = {}
    sets = {}
    if ev.get("exact_test", True):
        try:
            sets["exact_test"] = load_cifar(str(cfg.id), str(paths["data"]), split="test", root=ds.root,
                                            subset=str(ds.subset))
        except DataNotAvailable as err:
            out["exact_test"] = {"top1": None, "n": 0, "source": f"not available: {err}"}
    jp = ds.get("jpeg")
    if ev.get("jpeg_test", True) and jp:
        try:
            sets["jpeg_test"] = load_jpeg_cifar(str(cfg.id), paths["data"], paths["cache"], str(jp.test),
                                                jp.get("test_sha256"), "test", list(jp.classes), int(jp.n_test))
        except DataNotAvailable as err:
            out["jpeg_test"] = {"top1": None, "n": 0, "source": f"not available: {err}"}
    for name, data in sets.items():
        data = limit(data, n, seed, f"eval.limit ({name})")
        out[name] = {"top1": round(top1(model, data, device, bs), 6), "n": len(data), "source": data.describe(),
                     "notes": list(data.notes)}
    return out
