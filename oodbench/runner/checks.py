"""Checks made before any model work: a run that cannot finish should fail in a second, not after a forward pass."""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from oodbench.errors import OodbenchError
from oodbench.paths import resolve

MIN_FREE_MB = 200  # a CIFAR run stores a few MB per set; an ImageNet run ~0.5 GB per 50k images


def preflight(cfg: DictConfig) -> None:
    """Non-empty OOD list, positive image counts, writable cache and results dirs with some free space."""
    if not cfg.get("ood"):
        raise OodbenchError("no OOD set given (ood=[]); name at least one, e.g. ood=[isun,gaussian]")
    p = cfg.protocol
    for key in ("max_ood", "max_id", "max_fit"):
        value = p.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise OodbenchError(f"protocol.{key}={value} must be a positive whole number, or null for every image")
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
