"""Content-keyed on-disk cache of representations, so one forward pass serves every detector and sweep.

The key hashes everything that determines the arrays — checkpoint sha256, data content id, the exact official
indices, the input transform, the layer spec, dtype and this module's format version — never a user string,
so a changed checkpoint or subset can never hit a stale entry.

Safe for parallel sweep workers (Hydra's joblib / submitit launchers) on one machine or a shared filesystem:

* **one computation per key**: a worker that misses takes ``<entry>.lock`` (created with ``O_EXCL``); a second
  worker needing the same key waits, then reads the entry the first one wrote. The holder touches its lock
  every ``HEARTBEAT_S``; a lock whose writer process is gone (same host) or whose heartbeat stopped
  ``STALE_S`` ago (any host, e.g. a killed SLURM job) is broken, and the waiter computes the entry itself;
* **no torn reads**: an entry is written to ``.<entry>.<host>.<pid>.tmp`` and renamed into place;
  a truncated or foreign file is still detected and rebuilt;
* **no litter**: temp files of writers that died (``kill -9``) are removed when a cache is opened — those of a
  dead process on this host at once, any other after ``ORPHAN_S``.

Every forward pass logs exactly one ``cache miss`` line (``cache=false``: ``cache off``), every reuse one
``cache hit`` line, so a sweep's logs count its forward passes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from oodbench.errors import OodbenchError
from oodbench.runner.forward import Representations

FORMAT_VERSION = 1
HEARTBEAT_S = 20.0  # the lock holder refreshes its lock's mtime this often
STALE_S = 180.0  # a lock not refreshed for this long is abandoned (holder killed, host down)
ORPHAN_S = 1800.0  # temp files of another host older than this are removed
POLL_S = 0.2
log = logging.getLogger(__name__)
HOST = socket.gethostname()
SHORT_HOST = HOST.split(".")[0]  # as it appears in file names


def cache_key(**parts: object) -> str:
    payload = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner(text: str) -> tuple[str, int]:
    """``host pid`` as written in lock and temp file names/contents → (host, pid); (``""``, 0) if unreadable."""
    host, _, pid = text.strip().rpartition(" ")
    return (host, int(pid)) if pid.isdigit() else ("", 0)


class FileLock:
    """An ``O_EXCL`` lock file holding ``"<host> <pid> <nonce>"``, refreshed by a heartbeat thread.

    Works across processes and hosts sharing a filesystem (no ``fcntl``, which NFS setups often break).
    """

    def __init__(self, path: Path, label: str = "") -> None:
        self.path = Path(path)
        self.label = label
        self.token = f"{HOST} {os.getpid()} {time.time_ns()}"
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self.token.rsplit(" ", 1)[0] + "\n" + self.token + "\n")
        return True

    def _read(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def stale_reason(self, text: str) -> str | None:
        """Why the lock whose content is ``text`` is abandoned, or None while its holder is alive."""
        host, pid = _owner((text.splitlines() or [""])[0])
        if host == HOST and pid and not pid_alive(pid):
            return f"its writer (pid {pid}) is gone"
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        if age > STALE_S:
            return f"not refreshed for {age:.0f}s (holder {host or '?'} pid {pid or '?'})"
        return None

    def _break(self, text: str, reason: str) -> None:
        """Remove the abandoned lock ``text`` — only that one: rename it aside, and put it back if it changed."""
        aside = self.path.with_name(f"{self.path.name}.{SHORT_HOST}.{os.getpid()}.broken")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        if aside.read_text() != text:  # a live holder re-created it between our read and rename
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        else:
            log.warning("cache lock %s broken: %s", self.path.name, reason)
        aside.unlink(missing_ok=True)

    def acquire(self, timeout: float | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        t0, announced = time.time(), False
        while not self._try_create():
            text = self._read()
            if text is None:
                continue
            reason = self.stale_reason(text)
            if reason:
                self._break(text, reason)
                continue
            holder = (text.splitlines() or ["?"])[0]  # empty while its creator is still writing it
            if not announced:
                log.info("cache wait %-14s another worker (%s) is computing it", self.label, holder)
                announced = True
            if timeout is not None and time.time() - t0 > timeout:
                raise OodbenchError(f"waited {timeout:.0f}s for cache lock {self.path} held by "
                                    f"{holder}; if that process is gone, delete the lock file")
            time.sleep(POLL_S)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self._read() == self.token.rsplit(" ", 1)[0] + "\n" + self.token + "\n":
            self.path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def clean_orphans(root: Path, now: float | None = None) -> int:
    """Remove temp files (``*.tmp``) and set-aside locks (``*.broken``) below ``root`` left by dead writers:
    a dead process on this host at once, anything older than ``ORPHAN_S``. Returns how many were removed."""
    now = time.time() if now is None else now
    removed = 0
    for pattern in ("*/.*.tmp", "*/*.broken"):
        for p in root.glob(pattern):
            parts = p.name.split(".")  # .<entry>.npz.<host>.<pid>.tmp / <entry>.npz.lock.<host>.<pid>.broken
            host, pid = (parts[-3], int(parts[-2])) if len(parts) > 3 and parts[-2].isdigit() else ("", 0)
            try:
                age = now - p.stat().st_mtime
            except FileNotFoundError:
                continue
            if (host == SHORT_HOST and not pid_alive(pid)) or age > ORPHAN_S:
                p.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("cache: removed %d orphaned temp file(s) under %s", removed, root)
    return removed


class RepresentationCache:
    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = Path(root) / "representations"
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        if enabled and self.root.is_dir():
            clean_orphans(self.root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def _read(self, path: Path, key: str) -> Representations | None:
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    raise ValueError("key mismatch")
                return Representations(torch.from_numpy(z["logits"]), torch.from_numpy(z["features"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("cache entry %s unusable (%s); rebuilding", path.name, err)
            path.unlink(missing_ok=True)
            return None

    def _hit(self, path: Path, key: str, label: str, how: str = "") -> Representations | None:
        reps = self._read(path, key) if path.is_file() else None
        if reps is not None:
            self.hits += 1
            log.info("cache hit  %-14s %s (%.1f MB)%s", label, key[:12], path.stat().st_size / 1e6, how)
        return reps

    def _write(self, path: Path, key: str, reps: Representations) -> None:
        tmp = path.with_name(f".{path.name}.{SHORT_HOST}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, key=np.array(key), **reps.as_arrays())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def get_or_compute(self, key: str, compute: Callable[[], Representations], label: str) -> Representations:
        if not self.enabled:
            self.misses += 1
            log.info("cache off  %-14s forward pass", label)
            return compute()
        path = self.path(key)
        reps = self._hit(path, key, label)
        if reps is not None:
            return reps
        with FileLock(path.with_name(path.name + ".lock"), label).held():
            reps = self._hit(path, key, label, " [written by another worker]")
            if reps is not None:
                return reps
            self.misses += 1
            reps = compute()
            self._write(path, key, reps)
        log.info("cache miss %-14s %s (stored %.1f MB)", label, key[:12], path.stat().st_size / 1e6)
        return reps
