"""Any ``nn.Module`` that maps images to logits, behind oodbench's network interface (``features`` + ``head``), for the
Python API (:func:`oodbench.evaluate`).

Features are the input of a declared layer, captured by a forward pre-hook during the ordinary forward pass:
``layer="auto"`` = the last ``nn.Linear`` (the classifier of nearly every image network), ``layer="fc"`` = the module
of that name, or a callable ``layer(module, x) -> features``. When the layer is an ``nn.Linear`` whose output is the
network's output (checked on a probe batch), it is the ``head``: logits = head(features), so the detectors that
reshape features or the last layer (ReAct, DICE, ASH, ViM, ...) work; otherwise they say that they need one. A
timm model is recognised and uses timm's own ``forward_head(..., pre_logits=True)`` features.

Inputs: the network sees what oodbench's sets hold — pixels in [0, 1] — unless ``mean``/``std`` are given, in which
case ``(x − mean) / std`` comes first, as for the registered checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError

FeatureSpec = str | Callable[[nn.Module, Tensor], Tensor]


def _last_linear(module: nn.Module) -> tuple[str, nn.Linear] | None:
    found = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    return found[-1] if found else None


class ModuleClassifier(nn.Module):
    """``module`` (images → logits) with ``features`` from ``layer`` (see the module docstring)."""

    feature_map_names: tuple[str, ...] = ()

    def __init__(self, module: nn.Module, layer: FeatureSpec = "auto", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, probe_shape: Sequence[int] = (2, 3, 32, 32)) -> None:
        super().__init__()
        self.module = module.eval()
        self.register_buffer("mean", None if mean is None else torch.tensor([float(v) for v in mean]).view(1, -1, 1, 1))
        self.register_buffer("std", None if std is None else torch.tensor([float(v) for v in std]).view(1, -1, 1, 1))
        self._fn: Callable[[nn.Module, Tensor], Tensor] | None = None
        self._layer: nn.Module | None = None
        if callable(layer) and not isinstance(layer, str):
            self._fn, self.layer_name = layer, getattr(layer, "__name__", "callable")
        else:
            self.layer_name, self._layer = self._find(str(layer))
        self._captured: list[Tensor] = []
        self._linear = isinstance(self._layer, nn.Linear) and self._is_last(probe_shape)

    def _find(self, layer: str) -> tuple[str, nn.Module]:
        if layer == "auto":
            hit = _last_linear(self.module)
            if hit is None:
                raise CheckpointError(f"{type(self.module).__name__} has no nn.Linear layer to take features from; "
                                      "pass features='<module name>' or a callable features(model, x)")
            return hit
        modules = dict(self.module.named_modules())
        if layer not in modules:
            names = [n for n in modules if n][-8:]
            raise CheckpointError(f"{type(self.module).__name__} has no module named {layer!r} to take features "
                                  f"from; e.g. {', '.join(names)}")
        return layer, modules[layer]

    def _hook(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        self._captured.append(args[0])

    def _run(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(features, logits) of one forward pass."""
        feats, logits = self._run_raw(x)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or len(logits) != len(x):
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise CheckpointError(f"the model maps a batch of {len(x)} images to {shape}; oodbench needs logits of "
                                  f"shape ({len(x)}, classes)")
        return feats, logits

    def _run_raw(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if self._fn is not None:
            return self._fn(self.module, x).flatten(1), self.module(x)
        assert self._layer is not None
        handle = self._layer.register_forward_pre_hook(self._hook)
        try:
            self._captured.clear()
            logits = self.module(x)
        finally:
            handle.remove()
        if not self._captured:
            raise CheckpointError(f"layer {self.layer_name!r} was not called in the forward pass; choose another")
        return self._captured[-1].flatten(1), logits

    def _is_last(self, shape: Sequence[int]) -> bool:
        """Whether logits == layer(features) on a probe batch (so the layer is the network's head)."""
        p = next(self.module.parameters(), None)
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
        if p is not None:
            x = x.to(p.device, p.dtype)
        try:
            with torch.no_grad():
                f, logits = self._run(x)
                return bool(torch.allclose(self._layer(f), logits, rtol=1e-4, atol=1e-5))  # type: ignore[misc]
        except CheckpointError:
            raise
        except Exception:  # noqa: BLE001 — e.g. another input size: decided on the first real batch instead
            return True

    @property
    def num_classes(self) -> int | None:
        return getattr(self._layer, "out_features", None)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Penultimate features and logits from one forward pass."""
        return self._run(x)

    def features(self, x: Tensor) -> Tensor:
        return self._run(x)[0]

    def head(self, feats: Tensor) -> Tensor:
        if not self._linear:
            raise CheckpointError(f"features come from {self.layer_name!r}, which is not the network's final linear "
                                  "layer: this detector needs one (pass features='<name of the last nn.Linear>')")
        return self._layer(feats)  # type: ignore[misc]

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x)[1]

    def feature_maps(self, x: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
        raise ValueError("a model given to the API exposes logits and penultimate features only (no named feature "
                         "maps): the layer ensembles need a registered architecture")


def wrap(module: nn.Module, features: FeatureSpec = "auto", mean: Sequence[float] | None = None,
         std: Sequence[float] | None = None, probe_shape: Sequence[int] = (2, 3, 32, 32)) -> nn.Module:
    """A user's network as oodbench's interface: a model that has it already (``features`` + ``head``) as it is, a timm
    model through :class:`~oodbench.models.timm_net.TimmNet`, anything else through :class:`ModuleClassifier`."""
    if features == "auto" and hasattr(module, "features") and hasattr(module, "head") and callable(module.head):
        return module
    if features == "auto" and all(hasattr(module, a) for a in ("forward_features", "forward_head", "get_classifier")):
        from .normalized import Classifier
        from .timm_net import TimmNet

        cfg = getattr(module, "pretrained_cfg", {}) or {}
        return Classifier(TimmNet(module), mean or cfg.get("mean", (0.0,) * 3), std or cfg.get("std", (1.0,) * 3))
    return ModuleClassifier(module, features, mean, std, probe_shape)
