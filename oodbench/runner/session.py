"""What one run shares across its sets and detectors: paths, device, the loaded model and the cache."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from oodbench.data.base import ImageSet
from oodbench.errors import OodbenchError
from oodbench.paths import resolve
from oodbench.runner.build import build
from oodbench.runner.cache import RepresentationCache, cache_key
from oodbench.runner.checks import write_failure
from oodbench.runner.forward import Representations, extract, numeric_mode, resolve_device, set_tf32
from oodbench.runner.model import checkpoint_reference, load_model
from oodbench.runner.scoring import ScoringContext


class Session:
    """What a run shares across sets and detectors: paths, device, model, cache."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.paths = {k: resolve(k, cfg.paths.get(k)) for k in ("data", "weights", "cache", "results")}
        self.device = resolve_device(cfg.device)
        set_tf32(bool(cfg.get("tf32", False)))  # numeric mode, recorded in every row (provenance.environment)
        self.model, self.checkpoint = load_model(cfg.arch, self.paths["weights"], self.device)
        self.reference = checkpoint_reference(cfg.arch, self.checkpoint["name"], self.paths["weights"])
        self.cache = RepresentationCache(self.paths["cache"], enabled=cfg.cache)
        self.ctx = ScoringContext(self.model, self.device, cfg.batch_size, cfg.get("num_workers", "auto"))
        self.id_val: ImageSet | None = None  # ID test images a protocol holds out for per-set tuning

    def load_set(self, node: DictConfig, what: str, **overrides: Any) -> ImageSet:
        return build(node, what, data_dir=str(self.paths["data"]), cache_dir=str(self.paths["cache"]), **overrides)

    def representations(self, data: ImageSet) -> Representations:
        key = cache_key(
            checkpoint=self.checkpoint["sha256"], data=data.content_id, indices=data.index_digest(),
            n=len(data), transform="pixels01", layers="logits+penultimate", dtype="float32",
            **({"numeric": numeric_mode()} if self.device.type == "cuda" else {}),  # TF32 changes GPU numbers
        )
        try:
            return self.cache.get_or_compute(key, lambda: self._extract(data), data.name)
        except OSError as err:
            raise write_failure(err, self.cache.root, f"the representation cache entry of {data.name}") from None

    def _extract(self, data: ImageSet) -> Representations:
        """One forward pass; non-finite outputs are an error (and never cached), not a silently wrong score."""
        reps = extract(self.model, data, self.device, self.cfg.batch_size, self.cfg.get("num_workers", "auto"))
        bad = int((~torch.isfinite(reps.logits)).any(1).sum() + (~torch.isfinite(reps.features)).any(1).sum())
        if bad:
            raise OodbenchError(f"the network produced non-finite logits or features on {bad} images of {data.name}; "
                                f"the checkpoint {self.checkpoint['name']} or the inputs are broken (nothing cached)")
        return reps
