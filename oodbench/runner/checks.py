"""Checks made before any model work: a run that cannot finish should fail in a second, not after a forward pass.

:data:`OPTIONS` is the table of user-facing options with their type and range; :func:`preflight` checks every one
that the config has, so a new option joins by adding a line here (``tests/test_options.py`` fuzzes the table).
Detector, data-set and network arguments are checked against their constructors' type hints when they are built
(:func:`oodbench.runner.build.check_arguments`).
"""

from __future__ import annotations

import errno
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from oodbench.errors import OodbenchError
from oodbench.paths import resolve

MIN_FREE_MB = 200  # a CIFAR run stores a few MB per set; an ImageNet run ~0.5 GB per 50k images
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=,-]*$")


@dataclass(frozen=True)
class Option:
    """A user-facing option's type and range: ``int`` (``lo``), ``number`` (``lo`` .. ``hi``, ``hi`` excluded),
    ``bool``, ``choice`` (``values``), ``name`` (a file-name-safe string), ``device``; ``nullable``: null allowed;
    ``auto``: the string ``auto`` allowed."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    values: tuple[str, ...] = ()
    nullable: bool = False
    auto: bool = False

    def ok(self, v: Any) -> bool:
        if (v is None and self.nullable) or (v == "auto" and self.auto):
            return True
        if self.kind in ("int", "number"):
            whole = isinstance(v, int) and not isinstance(v, bool)
            if not (whole or (self.kind == "number" and isinstance(v, float) and v == v)):
                return False
            return (self.lo is None or v >= self.lo) and (self.hi is None or v < self.hi)
        if self.kind == "bool":
            return isinstance(v, bool)
        if self.kind == "choice":
            return v in self.values
        if self.kind == "name":
            return isinstance(v, str) and bool(NAME.match(v)) and len(v) <= 200
        if self.kind == "device":
            return isinstance(v, str) and bool(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v))
        raise ValueError(f"unknown option kind {self.kind!r}")

    def allowed(self) -> str:
        text = {"int": "a whole number" + (f" >= {self.lo:g}" if self.lo is not None else ""),
                "number": "a number" + (f" >= {self.lo:g}" if self.lo is not None else "")
                + (f" and < {self.hi:g}" if self.hi is not None else ""),
                "bool": "true or false", "choice": " or ".join(self.values),
                "name": "a name of letters, digits and ._+=,-", "device": "auto, cpu, cuda, cuda:<index> or mps"}
        out = text[self.kind]
        return ("auto or " if self.auto else "") + ("null or " if self.nullable else "") + out


COUNT = Option("int", lo=1, nullable=True)  # null = every image
OPTIONS: dict[str, Option] = {
    "batch_size": Option("int", lo=1),
    "num_workers": Option("int", lo=0, auto=True),
    "device": Option("device"),
    "tf32": Option("bool"),
    "cache": Option("bool"),
    "rerun": Option("bool"),
    "figures": Option("bool"),
    "result_set": Option("name", nullable=True),
    "run_name": Option("name", nullable=True),
    "arch.normalization": Option("choice", values=("odin", "dice", "imagenet"), nullable=True),
    "protocol.max_ood": COUNT,
    "protocol.max_id": COUNT,
    "protocol.max_fit": COUNT,
    "protocol.bootstrap": Option("int", lo=0),
    "protocol.seed": Option("int", lo=0),
    "protocol.id_holdout": Option("int", lo=0),
    "protocol.ood_holdout": Option("int", lo=0),
    "protocol.min_id_after_holdout": Option("int", lo=0),
    "protocol.metrics": Option("choice", values=("standard", "odin")),
    "protocol.draws": Option("int", lo=1, nullable=True),
    "protocol.draw_size": Option("int", lo=1),
    "protocol.val_n": Option("int", lo=0, nullable=True),
    "protocol.id_val": Option("choice", values=("train_tail",), nullable=True),
}


def check_table(cfg: DictConfig, table: dict[str, Option]) -> None:
    """Every option of ``table`` the config has: one line naming the option, its value and the allowed values."""
    missing = object()
    for key, option in table.items():
        value = OmegaConf.select(cfg, key, default=missing)
        if value is not missing and not option.ok(value):
            raise OodbenchError(f"{key}={value!r} is not allowed; use {option.allowed()}")


def check_options(cfg: DictConfig) -> None:
    """Every :data:`OPTIONS` entry the config has (:func:`check_table`), then whether the device exists here."""
    check_table(cfg, OPTIONS)
    device = str(cfg.get("device", "auto"))
    if device.startswith("cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= n:
            raise OodbenchError(f"device={device}: this machine has {n} CUDA device(s)"
                                f"{'' if n else ' (no CUDA)'}; use device=auto or device=cpu")
    if device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise OodbenchError("device=mps: MPS is not available on this machine; use device=auto or device=cpu")


def preflight(cfg: DictConfig) -> None:
    """Options in range, a non-empty OOD list, writable cache and results dirs with some free space."""
    if not cfg.get("ood"):
        raise OodbenchError("no OOD set given (ood=[]); name at least one, e.g. ood=[isun,gaussian]")
    check_options(cfg)
    dirs = [("cache", cfg.paths.get("cache"), "OODBENCH_CACHE or paths.cache")]
    if cfg.result_set:
        dirs.append(("results", cfg.paths.get("results"), "OODBENCH_RESULTS or paths.results"))
    for kind, explicit, how in dirs:
        writable_dir(resolve(kind, explicit), f"the {kind} directory", how)


def writable_dir(path: Path, what: str, how: str) -> None:
    """Create ``path`` if needed and prove it takes a file; check the free space. One clear line otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".oodbench-probe-"):
            pass
    except OSError as err:
        raise OodbenchError(f"{what} {path} is not writable ({err.strerror or err}); set {how} to a writable "
                            "directory") from None
    free_mb = shutil.disk_usage(path).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise OodbenchError(f"only {free_mb:.0f} MB free for {what} {path} (at least {MIN_FREE_MB} MB needed); free "
                            f"some space or set {how} to another disk")


def write_failure(err: OSError, path: Path | str, what: str) -> OodbenchError:
    """An OSError while writing ``what`` as one actionable line (disk full, read-only, permissions)."""
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}.get(
        err.errno or 0, err.strerror or str(err))
    return OodbenchError(f"cannot write {what} to {path}: {reason}; free space or point OODBENCH_CACHE / "
                         "OODBENCH_RESULTS at a writable disk, then rerun (finished cells are kept)")
