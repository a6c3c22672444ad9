"""The generic epoch loop: SGD (Nesterov) with a per-step cosine schedule, AMP on CUDA, per-epoch checkpoints.

Each epoch writes ``epoch_NNN.pt`` = ``{'state_dict', 'meta', 'optimizer', 'scheduler', 'scaler', 'epoch'}``
atomically (keeping the last ``keep_last``) and rewrites ``log.csv``; the last one is copied to ``final.pt``, and
``weights.pt`` = ``{'state_dict', 'meta'}`` only (the file to evaluate and publish: no optimizer state).
``resume`` continues after the last epoch file (a ``max_steps`` run's partial epoch counts as done). A
non-finite loss stops the run before the bad update (``check_every=1``; with ``check_every=k`` the loss is
read every k steps and at the end of each epoch, so no epoch with a non-finite loss is saved), keeping the last
good checkpoint.

``time_budget_s``: the epoch loop's wall-clock budget. Epoch 1 runs on the cosine of the requested ``epochs``;
then the steady-state time per epoch (epoch 1 without its first tenth of steps, which carries the warm-up, plus
the checkpoint write) fixes the number of epochs that fit the rest of the budget (at most ``epochs``, at least
1), and the cosine is re-spanned over that many epochs, so it still decays to ``lr_min`` at the last step. The
decision is recorded in every checkpoint's ``meta['schedule']`` and reused on resume.
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
from oodbench.train.data import DeviceBatches, EpochBatches
from oodbench.train.methods import Method

log = logging.getLogger("oodbench")
EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")
# Checked on resume: a checkpoint is only continued by a run of the same network and method, with the same schedule,
# method hyper-parameters and data; only these settings may differ (they never change a number).
RESUME_KEYS = ("arch", "num_classes", "method", "mean", "std")
RUNTIME_SETTINGS = ("resume", "num_workers", "keep_last", "check_every")  # change no number


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
    amp_dtype: str = "float16"  # float16 (with a GradScaler) | bfloat16 (no scaler)
    channels_last: bool = False  # model and inputs in channels-last memory format
    check_every: int = 1        # read the loss (a device sync) every k steps; always at the end of an epoch
    time_budget_s: float | None = None  # fix the number of epochs after epoch 1 to fit this (see module doc)
    budget_safety: float = 1.03  # the per-epoch estimate is multiplied by this when fixing the epochs


AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def plan_epochs(requested: int, budget_s: float, elapsed_s: float, per_epoch_s: float, safety: float = 1.03) -> int:
    """Epochs in all (epoch 1 done) that fit ``budget_s`` when epoch 1 took ``elapsed_s`` and later ones
    ``per_epoch_s`` each (times ``safety``): between 1 and ``requested``."""
    more = math.floor(max(budget_s - elapsed_s, 0.0) / max(per_epoch_s * safety, 1e-9))
    return int(max(1, min(requested, 1 + more)))


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


def train(model: nn.Module, method: Method, batches: EpochBatches | DeviceBatches, settings: Settings,
          out_dir: Path, meta: dict[str, Any], device: torch.device) -> Path:
    """Train ``model`` (pixels in [0, 1] -> logits) in place; return the path of ``final.pt``."""
    out_dir, meta = Path(out_dir), plain(meta)
    existing = epoch_files(out_dir)
    if existing and not settings.resume:
        raise OodbenchError(f"{out_dir} already holds checkpoints ({existing[-1][1].name}); pass resume=true to "
                            "continue that run, or choose another out=")
    if settings.amp_dtype not in AMP_DTYPES:
        raise OodbenchError(f"amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {settings.amp_dtype!r}")
    if settings.check_every < 1:
        raise OodbenchError(f"check_every must be >= 1, got {settings.check_every}")
    if settings.time_budget_s is not None and settings.time_budget_s <= 0:
        raise OodbenchError(f"time_budget_s must be > 0 (or null), got {settings.time_budget_s}")
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    net = getattr(model, "net", model)
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                          nesterov=settings.nesterov, weight_decay=settings.weight_decay)
    steps_per_epoch = len(batches)
    schedule = {"epochs_requested": settings.epochs, "epochs": settings.epochs,
                "time_budget_s": settings.time_budget_s, "fixed_after_epoch": None, "estimate_s_per_epoch": None,
                "epoch1_s": None}

    def total_steps() -> int:
        total = schedule["epochs"] * steps_per_epoch
        return min(total, int(settings.max_steps)) if settings.max_steps is not None else total

    sched = LambdaLR(opt, lambda s: cosine_factor(s, total_steps(), settings.lr, settings.lr_min))
    use_scaler = settings.amp and settings.amp_dtype == "float16"
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
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
        fixed = ckpt["meta"].get("schedule") or {}
        if fixed.get("fixed_after_epoch") is not None and settings.time_budget_s is not None:
            schedule.update(fixed)  # the budget's decision stands on resume (the cosine already follows it)
        if (out_dir / "log.csv").is_file():
            rows = [r for r in pd.read_csv(out_dir / "log.csv").to_dict("records") if r["epoch"] < start]
        log.info("resuming from %s (epoch %d, step %d)", last_good, start - 1, step)
    elif settings.resume:
        log.warning("resume=true but %s holds no epoch checkpoint: starting from the beginning", out_dir)

    on_device = isinstance(batches, DeviceBatches)
    loader = batches if on_device else DataLoader(batches, batch_size=None, shuffle=False,
                                                  num_workers=settings.num_workers, pin_memory=device.type == "cuda")
    amp_dtype = AMP_DTYPES[settings.amp_dtype]
    t_loop = time.time()
    epoch = start
    while epoch <= schedule["epochs"]:
        if settings.max_steps is not None and step >= settings.max_steps:
            break
        batches.set_epoch(epoch)
        model.train()
        t0, n, sums = time.time(), 0, {}
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        t_warm, warm_steps = None, max(1, steps_per_epoch // 10)
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch}/{schedule['epochs']}", leave=False,
                   disable=None)
        for x_in, y_in, x_out in bar:
            x_in = x_in.to(device, non_blocking=True).float().div_(255).contiguous(memory_format=fmt)
            y_in = y_in.to(device, non_blocking=True)
            if x_out is not None:
                x_out = x_out.to(device, non_blocking=True).float().div_(255).contiguous(memory_format=fmt)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=settings.amp):
                loss, logs = method.step(model, (x_in, y_in), x_out)
            if (n + 1) % settings.check_every == 0:
                value = float(loss.item())
                if not math.isfinite(value):
                    _diverged(value, epoch, step + 1, last_good)
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            step, n = step + 1, n + 1
            loss_sum += loss.detach().double()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v.float()
            if n == warm_steps:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t_warm = time.time()
            if settings.max_steps is not None and step >= settings.max_steps:
                break
        mean_loss = float(loss_sum.item()) / max(n, 1)  # syncs: the epoch's work is done
        if not math.isfinite(mean_loss):
            _diverged(mean_loss, epoch, step, last_good, within_epoch=True)
        t_steps_end = time.time()
        row = {"epoch": epoch, "global_step": step, "steps": n, "lr": opt.param_groups[0]["lr"],
               "seconds": round(t_steps_end - t0, 2), "loss": mean_loss,
               **{k: float(v) / max(n, 1) for k, v in sums.items()}}
        rows.append(row)
        last_good = out_dir / f"epoch_{epoch:03d}.pt"
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        epoch_meta = {**meta, "hyperparams": plain(hyper), "epoch": epoch, "global_step": step,
                      "partial_epoch": n < steps_per_epoch, "last_epoch_log": row, "schedule": dict(schedule)}
        save(last_good, {"state_dict": state, "epoch": epoch, "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "meta": epoch_meta})
        _write_log(out_dir / "log.csv", rows)
        if settings.keep_last is not None:
            for _, old in epoch_files(out_dir)[: -max(int(settings.keep_last), 1)]:
                old.unlink(missing_ok=True)
        log.info("epoch %d/%d: %s", epoch, schedule["epochs"],
                 " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if settings.time_budget_s is not None and schedule["fixed_after_epoch"] is None:
            saved = time.time() - t_steps_end
            steady = ((t_steps_end - t_warm) / max(n - warm_steps, 1) * steps_per_epoch
                      if t_warm is not None and n > warm_steps else t_steps_end - t0)
            schedule.update(estimate_s_per_epoch=round(steady + saved, 3), epoch1_s=round(time.time() - t_loop, 3),
                            fixed_after_epoch=epoch,
                            epochs=plan_epochs(settings.epochs, settings.time_budget_s, time.time() - t_loop,
                                               steady + saved, settings.budget_safety))
            log.info("time budget %.0f s: epoch %d took %.1f s, later epochs ~%.2f s each -> %d of %d epochs "
                     "(the cosine now spans %d steps)", settings.time_budget_s, epoch, time.time() - t_loop,
                     steady + saved, schedule["epochs"], settings.epochs, total_steps())
            if schedule["epochs"] == epoch:  # nothing more fits: the epoch just saved is the last; record that
                ckpt = torch.load(last_good, map_location="cpu", weights_only=True)
                ckpt["meta"]["schedule"] = dict(schedule)
                save(last_good, ckpt)
        epoch += 1
    if last_good is None:
        raise OodbenchError(f"nothing was trained (epochs={settings.epochs}, max_steps={settings.max_steps})")
    final = out_dir / "final.pt"
    atomic_write_bytes(final, lambda tmp: tmp.write_bytes(last_good.read_bytes()))
    final.chmod(0o644)
    ckpt = torch.load(final, map_location="cpu", weights_only=True)
    save(out_dir / "weights.pt", {"state_dict": ckpt["state_dict"], "meta": ckpt["meta"]})
    return final


def _diverged(value: float, epoch: int, step: int, last_good: Path | None, within_epoch: bool = False) -> None:
    kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written"
    where = f"in epoch {epoch} (by step {step})" if within_epoch else f"at epoch {epoch}, step {step}"
    raise TrainingDiverged(f"loss became {value} {where}; training stopped and {kept}; lower lr= (or set "
                           "amp=false) and resume=true")
