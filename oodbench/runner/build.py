"""Turn config nodes into objects: Hydra ``_target_`` is the registry, ``meta`` holds non-constructor facts."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from oodbench.errors import OodbenchError


def meta(node: DictConfig) -> dict[str, Any]:
    """The node's ``meta`` mapping (facts for the runner, not constructor arguments), resolved."""
    m = node.get("meta")
    return OmegaConf.to_container(m, resolve=True) if m is not None else {}


def build(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """Instantiate ``node`` without its ``meta``; constructor errors become one clear line."""
    cfg = OmegaConf.to_container(node, resolve=True)
    cfg.pop("meta", None)
    try:
        return instantiate(cfg, **kwargs)
    except Exception as err:  # hydra wraps the real error; report the innermost cause in one line
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, OodbenchError):
            raise cause from None
        raise OodbenchError(f"cannot build {what} from {cfg.get('_target_')}: {cause}") from None
