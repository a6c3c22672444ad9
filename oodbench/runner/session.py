"""What the cells of a run share — the loaded model, the device, the representation cache — and, inside one
process, what the jobs of a sweep share: a session is reused for the next cell on the same checkpoint file (keyed
by its sha256, so a replaced file is loaded again), and representations already read stay in memory."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from oodbench.data.base import ImageSet
from oodbench.detectors.base import CheckpointReference
from oodbench.errors import OodbenchError
from oodbench.runner.cache import RepresentationCache, cache_key
from oodbench.runner.checks import write_failure
from oodbench.runner.forward import Representations, extract, numeric_mode
from oodbench.runner.scoring import ScoringContext

log = logging.getLogger("oodbench")
KEEP_SESSIONS = 2            # models kept loaded across the cells of a sweep (LRU)
KEEP_BYTES = 2 * 1024 ** 3   # representations kept in memory across cells (LRU, by size)
_SESSIONS: OrderedDict[str, Session] = OrderedDict()
_REPS: OrderedDict[str, Representations] = OrderedDict()


def model_digest(model: nn.Module) -> str:
    """sha256 over the model's class and every parameter and buffer (name, dtype, shape, bytes): what the network
    computes, including its input normalization (a buffer of :class:`~oodbench.models.normalized.Classifier`). An
    in-memory model is identified by it; a changed weight changes it."""
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Session:
    """A classifier on a device with its representation cache; :meth:`representations` runs the network once per
    (model, image set) and serves every later request from memory or disk.

    ``model`` may be None with a ``loader`` (→ ``(model, provenance)``): the network is then loaded on first use, so
    a run whose result is stored never loads it (``checkpoint`` already holds its name and sha256)."""

    def __init__(self, model: nn.Module | None, checkpoint: dict[str, Any], device: torch.device,
                 cache: RepresentationCache, batch_size: int, num_workers: int | str = "auto",
                 reference: CheckpointReference | None = None,
                 loader: Callable[[], tuple[nn.Module, dict[str, Any]]] | None = None) -> None:
        if model is None and loader is None:
            raise ValueError("a Session needs a model or a loader")
        self._model, self._loader = (None if model is None else model.eval()), loader
        self.checkpoint, self.device, self.cache = dict(checkpoint), device, cache
        self.batch_size, self.num_workers = int(batch_size), num_workers
        self.reference = reference or CheckpointReference(str(checkpoint.get("name")), cache.root.parent)
        self._key: str | None = None

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            assert self._loader is not None
            model, prov = self._loader()
            if self.checkpoint.get("sha256") not in (None, prov["sha256"]):
                raise OodbenchError(f"checkpoint {prov['name']} changed while the run started (sha256 "
                                    f"{str(self.checkpoint['sha256'])[:12]}… then {prov['sha256'][:12]}…); rerun")
            self._model = model.eval()
            self.checkpoint.update(prov)
        return self._model

    @property
    def model_key(self) -> str:
        if self._key is None:
            self._key = model_digest(self.model)
        return self._key

    @property
    def ctx(self) -> ScoringContext:
        return ScoringContext(self.model, self.device, self.batch_size, self.num_workers)

    def representations(self, data: ImageSet) -> Representations:
        key = cache_key(model=self.model_key, data=data.content_id, indices=data.index_digest(), n=len(data),
                        transform="pixels01", layers="logits+penultimate", dtype="float32",
                        **({"numeric": numeric_mode()} if self.device.type == "cuda" else {}))  # TF32 moves GPU numbers
        if self.cache.enabled and key in _REPS:
            _REPS.move_to_end(key)
            self.cache.hits += 1
            log.info("cache hit  %-14s %s (in memory)", data.name, key[:12])
            return _REPS[key]
        try:
            reps = self.cache.get_or_compute(key, lambda: self._extract(data), data.name)
        except OSError as err:
            raise write_failure(err, self.cache.root, f"the representation cache entry of {data.name}") from None
        if self.cache.enabled:
            _remember(key, reps)
        return reps

    def _extract(self, data: ImageSet) -> Representations:
        """One forward pass; non-finite outputs are an error (and never cached), not a silently wrong score."""
        reps = extract(self.model, data, self.device, self.batch_size, self.num_workers)
        bad = int((~torch.isfinite(reps.logits)).any(1).sum() + (~torch.isfinite(reps.features)).any(1).sum())
        if bad:
            raise OodbenchError(f"the network produced non-finite logits or features on {bad} images of {data.name}; "
                                f"the checkpoint {self.checkpoint.get('name')} or the inputs are broken (nothing "
                                "cached)")
        return reps


def _remember(key: str, reps: Representations) -> None:
    _REPS[key] = reps
    size = lambda r: r.logits.nbytes + r.features.nbytes  # noqa: E731
    while len(_REPS) > 1 and sum(size(r) for r in _REPS.values()) > KEEP_BYTES:
        _REPS.popitem(last=False)


def reuse_session(key: str | None, make: Callable[[], Session]) -> Session:
    """The session stored under ``key`` (None: never reused), else ``make()``; the last KEEP_SESSIONS are kept."""
    if key is not None and key in _SESSIONS:
        _SESSIONS.move_to_end(key)
        return _SESSIONS[key]
    s = make()
    if key is not None:
        _SESSIONS[key] = s
        while len(_SESSIONS) > KEEP_SESSIONS:
            _SESSIONS.popitem(last=False)
    return s
