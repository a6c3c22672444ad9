"""Turn config nodes into objects: Hydra ``_target_`` is the registry, ``meta`` holds non-constructor facts.

Before a constructor runs, every argument the config gives is checked against the constructor's type hints (a
``float`` parameter given ``abc`` is one line naming the option and the type it takes, not a ``TypeError`` from
deep inside); a constructor's own error becomes one line naming what was being built.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from oodbench.errors import OodbenchError

_KINDS = {float: "a number", int: "a whole number", bool: "true or false", str: "a string"}


def meta(node: DictConfig) -> dict[str, Any]:
    """The node's ``meta`` mapping (facts for the runner, not constructor arguments), resolved."""
    m = node.get("meta")
    return OmegaConf.to_container(m, resolve=True) if m is not None else {}


def _accepts(hint: Any, value: Any) -> bool | None:
    """Whether ``value`` fits the type hint (None: the hint says nothing checkable)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_accepts(h, value) for h in typing.get_args(hint)]
        return None if all(v is None for v in verdicts) else any(v is not False for v in verdicts)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    return None


def _expected(hint: Any) -> str:
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    names = [("null" if a is type(None) else _KINDS.get(a, getattr(a, "__name__", str(a)))) for a in args]
    return " or ".join(names)


def check_arguments(cfg: dict[str, Any], what: str, prefix: str) -> None:
    """Every argument of ``cfg`` (a ``_target_`` node, plain data) against its constructor's type hints, nested
    ``_target_`` nodes too; one :class:`OodbenchError` line naming ``<prefix>.<arg>`` otherwise."""
    target = cfg.get("_target_")
    if not target:
        return
    try:
        fn = get_object(str(target))
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:  # noqa: BLE001 — an unimportable target is reported by instantiate itself
        return
    for arg, value in cfg.items():
        if arg.startswith("_"):
            continue
        if isinstance(value, dict) and "_target_" in value:
            check_arguments(value, what, f"{prefix}.{arg}")
            continue
        hint = hints.get(arg)
        if hint is not None and _accepts(hint, value) is False:
            raise OodbenchError(f"{prefix}.{arg}={value!r}: {what} takes {arg} as {_expected(hint)}")


def build(node: DictConfig, what: str, prefix: str | None = None, **kwargs: Any) -> Any:
    """Instantiate ``node`` without its ``meta``; arguments checked first (:func:`check_arguments`), constructor
    errors as one clear line."""
    cfg = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    cfg.pop("meta", None)
    cfg.update(kwargs)
    check_arguments(cfg, what, prefix or what.split()[0])
    try:
        return instantiate(cfg)
    except Exception as err:  # hydra wraps the real error; report the innermost cause in one line
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, OodbenchError):
            raise cause from None
        raise OodbenchError(f"cannot build {what} from {cfg.get('_target_')}: {cause}") from None
