"""Any timm network (ViT, ConvNeXt, ResNet, EfficientNet, ...) behind the oodbench network interface.

timm gives every model the same two calls: ``forward_features`` (the trunk) and ``forward_head(...,
pre_logits=True)`` (pooling and any pre-logits norm/MLP), so the penultimate features are uniformly
``forward_head(forward_features(x), pre_logits=True)`` — the vector the classifier (``get_classifier()``)
maps to logits, where ReAct clips, ASH shapes and DICE sparsifies — with no per-network wrapper.

Weights: ``checkpoint`` = a local file (``.pth``/``.safetensors``; a plain state dict or one under
``state_dict``/``model``), or ``timm-cache`` = the model's pretrained file already in the Hugging Face cache
(looked up offline, never downloaded). Input normalization defaults to the model's ``pretrained_cfg``
mean/std. ``pip install -e .[timm]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..errors import CheckpointError
from .local import load_strict, local_file
from .normalized import Classifier
from .torchvision_nets import check_hub_prefix


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise CheckpointError("arch=timm needs timm: pip install -e .[timm]") from None
    return timm


class TimmNet(nn.Module):
    """A timm model as ``features`` (pre-logits vector) + ``head`` (its classifier)."""

    feature_map_names: tuple[str, ...] = ()

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        classifier = model.get_classifier()
        if not isinstance(classifier, nn.Linear):
            raise CheckpointError(f"timm model {type(model).__name__} has no linear classifier "
                                  f"({type(classifier).__name__}); pass num_classes > 0")
        self.feature_dim, self.num_classes = classifier.in_features, classifier.out_features

    def features(self, x: Tensor) -> Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def head(self, feats: Tensor) -> Tensor:
        return self.model.get_classifier()(feats)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def feature_maps(self, x: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
        raise ValueError("arch=timm exposes logits and penultimate features only (no named feature maps)")


def _cached_file(timm: Any, name: str) -> Path:
    """The pretrained weights of ``name`` in the Hugging Face cache, found offline."""
    cfg = timm.models.get_pretrained_cfg(name) if hasattr(timm.models, "get_pretrained_cfg") else None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo_id=hub_id, filename=filename)
            if isinstance(found, str):
                return Path(found)
    raise CheckpointError(f"no cached pretrained weights for timm model {name} (looked for {hub_id or name} in the "
                          "Hugging Face cache; nothing is downloaded): pass arch.checkpoint=/path/to/weights")


def _state_dict(timm: Any, path: Path) -> dict[str, Tensor]:
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as err:  # torch / safetensors errors for foreign or truncated files
        raise CheckpointError(f"cannot read weights {path} ({err})") from None
    return state


def load_timm(
    name: str = "", checkpoint: str = "timm-cache", weights_dir: str | None = None,
    num_classes: int | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
) -> tuple[Classifier, dict[str, Any]]:
    """``(Classifier in eval mode, provenance)`` for timm model ``name`` with weights from ``checkpoint``.

    ``num_classes`` defaults to the size of the checkpoint's classifier.
    """
    timm = _timm()
    model = name
    if not model or model == "timm":
        raise CheckpointError("arch=timm needs arch.name=<timm model name>, e.g. arch.name=convnext_tiny")
    if model not in timm.list_models():
        raise CheckpointError(f"unknown timm model {model!r}; see timm.list_models()")
    if checkpoint == "timm-cache":
        path = _cached_file(timm, model)
    else:
        path = local_file(checkpoint, weights_dir)
    digest = check_hub_prefix(path, what=f"checkpoint {path.name}")
    state = _state_dict(timm, path)
    cfg = timm.models.get_pretrained_cfg(model)
    key = f"{getattr(cfg, 'classifier', None) or 'head'}.weight"
    if num_classes is None:
        if key not in state:
            raise CheckpointError(f"{path} has no {key}: is it a {model} checkpoint? (or pass arch.num_classes)")
        num_classes = int(state[key].shape[0])
    net = timm.create_model(model, pretrained=False, num_classes=num_classes)
    load_strict(net, state, path, f"timm model {model}")
    data_cfg = net.pretrained_cfg
    mean = tuple(mean if mean is not None else data_cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(std if std is not None else data_cfg.get("std", (0.229, 0.224, 0.225)))
    clf = Classifier(TimmNet(net), mean, std).eval()
    prov = {"name": f"timm-{model}-{path.stem}", "path": str(path), "sha256": digest, "arch": model,
            "num_classes": num_classes, "mean": tuple(float(m) for m in mean),
            "std": tuple(float(s) for s in std), "fmt": "timm", "timm_version": timm.__version__,
            "timm_input_size": tuple(data_cfg.get("input_size", ()))}
    return clf, prov
