"""The generic epoch loop: SGD (Nesterov) with a per-step cosine schedule, AMP on CUDA, per-epoch checkpoints.

Each epoch writes ``epoch_NNN.pt`` = ``{'state_dict', 'meta', 'optimizer', 'scheduler', 'scaler', 'epoch'}``
atomically (keeping the last ``keep_last``) and rewrites ``log.csv``; the last one is copied to ``final.pt``.
``resume`` continues after the last epoch file (a ``max_steps`` run's partial epoch counts as done). A
non-finite loss stops the run before the bad update, keeping the last good checkpoint.
"""

from __future__ import annotations

import io
import logging
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from tqdm import tqdm

from oodbench.data.files import atomic_write_bytes
from oodbench.errors import OodbenchError
from oodbench.train.data import EpochBatches
from oodbench.train.methods import Method

log = logging.getLogger("oodbench")
EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")
# Checked on resume: a checkpoint is only continued by a run of the same network and method, with the same schedule,
# method hyper-parameters and data; only these settings may differ (they never change a number).
RESUME_KEYS = ("arch", "num_classes", "method", "mean", "std")
RUNTIME_SETTINGS = ("resume", "num_workers", "keep_last")


class TrainingDiverged(OodbenchError):
    """The loss became NaN / inf; the run stopped and kept its last good checkpoint."""


@dataclass(frozen=True)
class Settings:
    epochs: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_min: float = 1e-6
    max_steps: int | None = None
    amp: bool = False
    num_workers: int = 0
    resume: bool = False
    keep_last: int | None = 3  # epoch checkpoints kept on disk (None = all); resume needs only the last


def cosine_factor(step: int, total: int, lr: float, lr_min: float) -> float:
    """Multiplier of ``lr`` at ``step`` of ``total``: cosine from 1 down to ``lr_min / lr``."""
    floor = min(lr_min / lr, 1.0) if lr > 0 else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def epoch_files(out_dir: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in out_dir.glob("epoch_*.pt") if (m := EPOCH_FILE.match(p.name))]
    return sorted(found)


def save(path: Path, obj: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and a rename: never a half-written checkpoint."""
    atomic_write_bytes(path, lambda tmp: torch.save(obj, tmp))
    path.chmod(0o644)  # mkstemp creates 0600; checkpoints are meant to be shared


def _to_python(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


def plain(obj: Any) -> Any:
    """``obj`` as builtin containers and scalars only (``torch.load(weights_only=True)`` refuses e.g. the str
    subclass ``torch.__version__`` or numpy scalars)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    for kind in (bool, int, float, str):
        if isinstance(obj, kind):
            return kind(obj)
    return obj.item() if hasattr(obj, "item") else str(obj)


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, index=False, float_format="%.6g")
    atomic_write_bytes(path, lambda tmp: tmp.write_text(buf.getvalue()))


def _check_resumable(ckpt_meta: dict[str, Any], meta: dict[str, Any], path: Path) -> None:
    for key in RESUME_KEYS:
        have, want = _to_python(ckpt_meta.get(key)), _to_python(meta.get(key))
        if isinstance(have, (list, tuple)) and isinstance(want, (list, tuple)):
            same = len(have) == len(want) and all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(have, want))
        else:
            same = have == want
        if not same:
            raise OodbenchError(f"cannot resume from {path}: its {key} is {have!r} but this run has {want!r}; "
                                f"resume with the same settings or choose another out=")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for key, val in node.items() for k, v in _flat(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def _check_same_run(saved: dict[str, Any], hyper: dict[str, Any], path: Path) -> None:
    """A resumed run continues the saved one exactly: the same settings (bar :data:`RUNTIME_SETTINGS`), method
    hyper-parameters and batches; otherwise one line naming every field that differs, and nothing is written."""
    have, want = _flat(plain(saved)), _flat(plain(hyper))
    skip = {f"settings.{k}" for k in RUNTIME_SETTINGS}
    diff = sorted(k for k in set(have) | set(want) if k not in skip and have.get(k) != want.get(k))
    if diff:
        shown = "; ".join(f"{k}: {have.get(k)!r} (saved) vs {want.get(k)!r}" for k in diff[:4])
        raise OodbenchError(f"cannot resume from {path}: this run differs from the saved one in {shown}"
                            f"{' ...' if len(diff) > 4 else ''}; rerun with the saved values, or start a new run in "
                            "another out=")


def train(model: nn.Module, method: Method, batches: EpochBatches, settings: Settings, out_dir: Path,
          meta: dict[str, Any], device: torch.device) -> Path:
    """Train ``model`` (pixels in [0, 1] -> logits) in place; return the path of ``final.pt``."""
    out_dir, meta = Path(out_dir), plain(meta)
    existing = epoch_files(out_dir)
    if existing and not settings.resume:
        raise OodbenchError(f"{out_dir} already holds checkpoints ({existing[-1][1].name}); pass resume=true to "
                            "continue that run, or choose another out=")
    model.to(device)
    net = getattr(model, "net", model)
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                          nesterov=settings.nesterov, weight_decay=settings.weight_decay)
    total = settings.epochs * len(batches)
    if settings.max_steps is not None:
        total = min(total, int(settings.max_steps))
    sched = LambdaLR(opt, lambda s: cosine_factor(s, total, settings.lr, settings.lr_min))
    scaler = torch.amp.GradScaler(device.type, enabled=settings.amp)
    start, step, rows, last_good = 1, 0, [], None
    hyper = {"settings": asdict(settings), "method": method.hyperparams, "batches": batches.describe()}
    if settings.resume and existing:
        last_good = existing[-1][1]
        ckpt = torch.load(last_good, map_location="cpu", weights_only=True)
        _check_resumable(ckpt.get("meta", {}), meta, last_good)
        _check_same_run(ckpt.get("meta", {}).get("hyperparams", {}), hyper, last_good)
        net.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start, step = int(ckpt["epoch"]) + 1, int(ckpt["meta"]["global_step"])
        if (out_dir / "log.csv").is_file():
            rows = [r for r in pd.read_csv(out_dir / "log.csv").to_dict("records") if r["epoch"] < start]
        log.info("resuming from %s (epoch %d, step %d)", last_good, start - 1, step)
    elif settings.resume:
        log.warning("resume=true but %s holds no epoch checkpoint: starting from the beginning", out_dir)

    loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=settings.num_workers,
                        pin_memory=device.type == "cuda")
    for epoch in range(start, settings.epochs + 1):
        if settings.max_steps is not None and step >= settings.max_steps:
            break
        batches.set_epoch(epoch)
        model.train()
        t0, n, loss_sum, sums = time.time(), 0, 0.0, {}
        bar = tqdm(loader, total=len(batches), desc=f"epoch {epoch}/{settings.epochs}", leave=False, disable=None)
        for x_in, y_in, x_out in bar:
            x_in = x_in.to(device, non_blocking=True).float().div_(255)
            y_in = y_in.to(device, non_blocking=True)
            x_out = None if x_out is None else x_out.to(device, non_blocking=True).float().div_(255)
            with torch.autocast(device.type, dtype=torch.float16, enabled=settings.amp):
                loss, logs = method.step(model, (x_in, y_in), x_out)
            value = float(loss.item())
            if not math.isfinite(value):
                kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written"
                raise TrainingDiverged(f"loss became {value} at epoch {epoch}, step {step + 1}; training stopped "
                                       f"and {kept}; lower lr= (or set amp=false) and resume=true")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            step, n, loss_sum = step + 1, n + 1, loss_sum + value
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v.float()
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            if settings.max_steps is not None and step >= settings.max_steps:
                break
        row = {"epoch": epoch, "global_step": step, "steps": n, "lr": opt.param_groups[0]["lr"],
               "seconds": round(time.time() - t0, 2), "loss": loss_sum / max(n, 1),
               **{k: float(v) / max(n, 1) for k, v in sums.items()}}
        rows.append(row)
        last_good = out_dir / f"epoch_{epoch:03d}.pt"
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        save(last_good, {"state_dict": state, "epoch": epoch, "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                         "meta": {**meta, "hyperparams": plain(hyper), "epoch": epoch, "global_step": step,
                                  "partial_epoch": n < len(batches), "last_epoch_log": row}})
        _write_log(out_dir / "log.csv", rows)
        if settings.keep_last is not None:
            for _, old in epoch_files(out_dir)[: -max(int(settings.keep_last), 1)]:
                old.unlink(missing_ok=True)
        log.info("epoch %d/%d: %s", epoch, settings.epochs,
                 " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    if last_good is None:
        raise OodbenchError(f"nothing was trained (epochs={settings.epochs}, max_steps={settings.max_steps})")
    final = out_dir / "final.pt"
    atomic_write_bytes(final, lambda tmp: tmp.write_bytes(last_good.read_bytes()))
    final.chmod(0o644)
    return final
