"""One batched pass of a classifier over an image set: logits and penultimate features."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from oodbench.data.base import ImageSet
from oodbench.data.lazy import LazyImages, default_threads
from oodbench.heap import pooled_heap

_log = logging.getLogger("oodbench")


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


class _Batches(torch.utils.data.Dataset):
    """Batch ``i`` of ``data.batches(batch_size)`` as item ``i``: a DataLoader over it (``batch_size=None``,
    sequential sampler) yields exactly the tensors of ``data.batches``, in the same order, whatever the workers."""

    def __init__(self, data: ImageSet, batch_size: int) -> None:
        self.data, self.batch_size = data, batch_size

    def __len__(self) -> int:
        return (len(self.data) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data.batch(i * self.batch_size, self.batch_size)


def resolve_workers(num_workers: int | str, data: ImageSet, device: torch.device | None = None) -> int:
    """``auto`` → decode workers for sets decoded on the fly (image folders: :class:`LazyImages`), at most 4: with
    the forward on a GPU, up to the CPUs; on the CPU, only the CPUs its threads leave free (none on a 2-CPU
    machine, where 2 workers measured 0.29× the bare loop against 0.94× without, ``results/bench.md``). 0 for
    in-memory pixel arrays, where there is nothing to overlap."""
    if num_workers == "auto":
        if not isinstance(data.images, LazyImages):
            return 0
        free = default_threads() - (0 if device is not None and device.type == "cuda" else torch.get_num_threads())
        return min(4, max(0, free))
    n = int(num_workers)
    if n < 0:
        raise ValueError(f"num_workers must be >= 0 or 'auto', got {num_workers!r}")
    return n


def iter_batches(data: ImageSet, batch_size: int, num_workers: int | str = 0, pin_memory: bool = False,
                 device: torch.device | None = None):
    """``data.batches(batch_size)``; with workers, decoded in DataLoader worker processes while the caller runs the
    forward on the previous batches (same tensors, same order: :class:`_Batches`)."""
    n_batches = (len(data) + batch_size - 1) // batch_size
    workers = min(resolve_workers(num_workers, data, device), n_batches)
    if workers and hasattr(data.images, "materialize"):
        data.images.materialize()  # deferred pixels: made once here, not once per worker
    if workers == 0 or n_batches == 1:  # a single batch has nothing to overlap with
        yield from data.batches(batch_size)
        return
    yield from torch.utils.data.DataLoader(_Batches(data, batch_size), batch_size=None, shuffle=False,
                                           num_workers=workers, pin_memory=pin_memory)


def map_batches(
    data: ImageSet, fn: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
    device: torch.device, batch_size: int, desc: str, num_workers: int | str = 0,
) -> list:
    """Apply ``fn`` to every batch on ``device``; return the per-batch outputs moved to the CPU. ``num_workers``:
    DataLoader decode workers (:func:`iter_batches`); 0 decodes in this process. On the CPU the pass runs in
    :func:`oodbench.heap.pooled_heap` (bit-identical; 1.95× for DenseNet-BC-100 on 2 CPUs, ``results/bench.md``)."""
    out = []
    total = (len(data) + batch_size - 1) // batch_size
    batches = iter_batches(data, batch_size, num_workers, pin_memory=device.type == "cuda", device=device)
    progress = LogProgress(desc, len(data))
    with pooled_heap(device.type == "cpu"):  # activations reused from the heap, not re-mapped: same numbers
        for x in tqdm(batches, total=total, desc=desc, leave=False, disable=None):
            y = fn(x.to(device, non_blocking=True))
            out.append(tuple(t.float().cpu() for t in y) if isinstance(y, tuple) else y.float().cpu())
            progress.update(len(x))
    return out


class LogProgress:
    """Progress for logs (SLURM, nohup): when stderr is not a terminal (tqdm's bar is then off), one log line per
    ~10 % of a pass with images/s and the time left; silent on a terminal and for passes under 10 s."""

    def __init__(self, desc: str, total: int, every: float = 0.1) -> None:
        self.desc, self.total, self.every = desc, total, every
        self.on = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
        self.done, self.next, self.t0 = 0, every, time.time()

    def update(self, n: int) -> None:
        self.done += n
        if not self.on or self.total <= 0 or self.done / self.total < self.next:
            return
        elapsed = time.time() - self.t0
        self.next = (int(self.done / self.total / self.every) + 1) * self.every
        if elapsed < 10 and self.done < self.total:
            return
        rate = self.done / max(elapsed, 1e-9)
        eta = (self.total - self.done) / max(rate, 1e-9)
        _log.info("%s: %d/%d images (%.0f%%), %.1f images/s, %s left", self.desc, self.done, self.total,
                  100 * self.done / self.total, rate, f"{eta:.0f}s" if eta < 120 else f"{eta / 60:.1f} min")


@torch.no_grad()
def extract(model: nn.Module, data: ImageSet, device: torch.device, batch_size: int = 128,
            num_workers: int | str = 0) -> Representations:
    """Penultimate features and logits (``head(features)``) in one pass; ``num_workers`` decode workers
    (:func:`iter_batches`) overlap decoding with the forward and never change a number."""

    both = getattr(model, "features_and_logits", None)  # a wrapped nn.Module: both from its one forward pass

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if both is not None:
            feats, logits = both(x)
            return logits, feats
        feats = model.features(x)
        return model.head(feats), feats

    parts = map_batches(data, step, device, batch_size, desc=f"forward {data.name}", num_workers=num_workers)
    return Representations(
        logits=torch.cat([p[0] for p in parts]), features=torch.cat([p[1] for p in parts])
    )
