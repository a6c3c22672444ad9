"""One batched pass of a classifier over an image set: logits and penultimate features."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from oodbench.data.base import ImageSet


@dataclass
class Representations:
    """What one forward pass yields for a set, kept as float32 CPU tensors."""

    logits: torch.Tensor
    features: torch.Tensor

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"logits": self.logits.numpy(), "features": self.features.numpy()}


def _sweep_job_num() -> int | None:
    """This job's number inside a Hydra multirun (any launcher), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return int(hc.job.num) if hc.mode == RunMode.MULTIRUN else None
    except (ValueError, ImportError, AttributeError, TypeError):  # no Hydra app running (library use)
        return None


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; otherwise whatever torch accepts (``cpu``, ``cuda:1``…).

    In a sweep on a node with several visible GPUs, ``auto`` spreads the jobs: job ``k`` gets ``cuda:k % n``,
    so ``hydra/launcher=joblib hydra.launcher.n_jobs=<n GPUs>`` runs one worker per GPU (SLURM jobs see only
    their own GPU and get ``cuda:0``).
    """
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        n, job = torch.cuda.device_count(), _sweep_job_num()
        return torch.device(f"cuda:{job % n}" if n > 1 and job is not None else "cuda")
    return torch.device(name)


def set_tf32(enabled: bool = False) -> None:
    """TF32 for float32 CUDA matmuls and cuDNN convolutions on (``tf32=true``) or off (default: plain fp32).

    PyTorch's own defaults differ — matmul off but cuDNN convolutions *on* — which moves GPU numbers by up to
    ~0.1 FPR95 points against CPU fp32; oodbench sets both explicitly and records them (:func:`numeric_mode`).
    No effect on CPU computations.
    """
    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision"):  # torch >= 2.9: the new API (never mixed with the legacy one)
        prec = "tf32" if enabled else "ieee"
        b.cuda.matmul.fp32_precision = prec
        for backend in (b.cudnn.conv, b.cudnn.rnn):
            backend.fp32_precision = prec
    else:
        b.cuda.matmul.allow_tf32 = enabled
        b.cudnn.allow_tf32 = enabled


def numeric_mode() -> dict[str, object]:
    """What every result row records about the arithmetic: TF32 for CUDA matmul / cuDNN conv, AMP dtype."""
    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision"):
        matmul = b.cuda.matmul.fp32_precision == "tf32" or torch.get_float32_matmul_precision() != "highest"
        conv = b.cudnn.conv.fp32_precision == "tf32"
    else:
        matmul, conv = bool(b.cuda.matmul.allow_tf32), bool(b.cudnn.allow_tf32)
    return {"tf32_matmul": bool(matmul), "tf32_cudnn": bool(conv), "amp_dtype": "none"}  # extraction runs fp32


def map_batches(
    data: ImageSet, fn: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
    device: torch.device, batch_size: int, desc: str,
) -> list:
    """Apply ``fn`` to every batch on ``device``; return the per-batch outputs moved to the CPU."""
    out = []
    total = (len(data) + batch_size - 1) // batch_size
    for x in tqdm(data.batches(batch_size), total=total, desc=desc, leave=False, disable=None):
        y = fn(x.to(device, non_blocking=True))
        out.append(tuple(t.float().cpu() for t in y) if isinstance(y, tuple) else y.float().cpu())
    return out


@torch.no_grad()
def extract(model: nn.Module, data: ImageSet, device: torch.device, batch_size: int = 128) -> Representations:
    """Penultimate features and logits (``head(features)``) in one pass."""

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = model.features(x)
        return model.head(feats), feats

    parts = map_batches(data, step, device, batch_size, desc=f"forward {data.name}")
    return Representations(
        logits=torch.cat([p[0] for p in parts]), features=torch.cat([p[1] for p in parts])
    )
