"""Known architectures and checkpoints, and :func:`load_classifier` that turns either into a model.

Checkpoint files live in the weights directory (``oodbench.paths.resolve("weights")``: ``OODBENCH_WEIGHTS``
or ``../shared/weights``) under the registry's ``filename``; a checkpoint of your own is loaded with
``load_classifier(None, path=..., arch=..., mean=..., std=...)`` or, if it was written by oodbench's
trainer as ``{'state_dict': ..., 'meta': {'arch', 'num_classes', 'mean', 'std'}}``, with just ``path``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.files import sha256_file
from ..errors import CheckpointError
from ..paths import REPO_ROOT, resolve
from .base import OODNet
from .densenet import DenseNet3
from .legacy import read_state_dict
from .normalized import Classifier
from .torchvision_nets import check_hub_prefix, hub_checkpoint_dir, hub_hash_prefix, mobilenet_v2, resnet50
from .two_head import densenet100_mcd
from .wrn import WideResNet

ARCHS: dict[str, Callable[[int], OODNet]] = {
    "densenet100": lambda num_classes: DenseNet3(100, num_classes),
    "wrn40_2": lambda num_classes: WideResNet(40, num_classes, widen_factor=2),
    "densenet100_mcd": densenet100_mcd,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
}

Triple = tuple[float, float, float]
NORMALIZATIONS: dict[str, tuple[Triple, Triple]] = {
    # ODIN / Mahalanobis / Outlier Exposure / Energy: the classic CIFAR statistics in 0..255 units.
    "odin": ((125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255)),
    # DICE (and the kuangliu CIFAR recipe): note the std is not the true per-pixel std.
    "dice": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    # torchvision / ImageNet-1k (ResNet-50, MobileNetV2, ...): the per-channel statistics of ImageNet train.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_ODIN, _DICE = NORMALIZATIONS["odin"], NORMALIZATIONS["dice"]
_DICE_REPO = "https://github.com/deeplearning-wisc/dice/raw/ca6c275c5e1948858a911ea40924d6d5c412aac2"
_DICE_RAW = f"{_DICE_REPO}/checkpoints"
_ENERGY_RAW = "https://github.com/wetliu/energy_ood/raw/master/CIFAR/snapshots/pretrained"
# Checkpoints trained by this repo (train.py): ``<weights dir>/trained/<file>``, else ``weights/trained/<file>`` in the
# checkout (git-ignored; weights/trained/README.md says how each file is made).
TRAINED_DIR = REPO_ROOT / "weights" / "trained"
GPU_SCRIPT = "bash scripts/gpu_train_wrn.sh"


@dataclass(frozen=True)
class CheckpointSpec:
    """A published checkpoint: where it comes from, how to check it, and how to build its network."""

    name: str
    filename: str
    sha256: str | None
    arch: str
    num_classes: int
    mean: Triple
    std: Triple
    fmt: str
    id_dataset: str
    source: str
    url: str
    note: str = ""
    # the authors' mean penultimate feature over the full ID training set (DICE's ``*_feat_stat.npy``), a path
    # inside the weights directory, and where to get it
    mean_feature: str = ""
    mean_feature_url: str = ""
    # trained here: the command that makes the file (until its sha256 is pinned, loading it is an error naming it)
    make: str = ""


CHECKPOINTS: dict[str, CheckpointSpec] = {spec.name: spec for spec in (
    CheckpointSpec("odin_densenet10", "odin_densenet10.pth",
                   "3211ffc3f6107d0605b5914d58fd352318b7af6464e99eb875b88e5c38fdcb31",
                   "densenet100", 10, *_ODIN, "legacy_module", "cifar10",
                   "ODIN (Liang et al. 2018), github.com/facebookresearch/odin; = Mahalanobis densenet_cifar10.pth",
                   "https://www.dropbox.com/s/wr4kjintq1tmorr/densenet10.pth.tar.gz",
                   "extract densenet10.pth from the archive"),
    CheckpointSpec("odin_densenet100", "odin_densenet100.pth",
                   "cc65b9aa2b58a73ea50280eb5db875341c7300ef29aed6b56fc140f3e2c66d25",
                   "densenet100", 100, *_ODIN, "legacy_module", "cifar100",
                   "ODIN (Liang et al. 2018), github.com/facebookresearch/odin; = Mahalanobis densenet_cifar100.pth",
                   "https://www.dropbox.com/s/vxuv11jjg8bw2v9/densenet100.pth.tar.gz",
                   "extract densenet100.pth from the archive"),
    CheckpointSpec("dice_densenet_cifar10", "dice_cifar10_densenet_checkpoint_100.pth.tar",
                   "deaefd082911a1c6c92aacdcfecf03c71b932acc5c08b779c85c44eccdc0c817",
                   "densenet100", 10, *_DICE, "checkpoint_dict", "cifar10",
                   "DICE (Sun & Li, ECCV 2022), github.com/deeplearning-wisc/dice @ ca6c275c",
                   f"{_DICE_RAW}/CIFAR-10/densenet/checkpoint_100.pth.tar",
                   mean_feature="dice-feature-stats/CIFAR-10_densenet_feat_stat.npy",
                   mean_feature_url=f"{_DICE_REPO}/cache/CIFAR-10_densenet_feat_stat.npy"),
    CheckpointSpec("dice_densenet_cifar100", "dice_cifar100_densenet_checkpoint_100.pth.tar",
                   "56cbe261c2612976e11aedcbd60ba00766e8c01c78f96c3f18ff561ead804d47",
                   "densenet100", 100, *_DICE, "checkpoint_dict", "cifar100",
                   "DICE (Sun & Li, ECCV 2022), github.com/deeplearning-wisc/dice @ ca6c275c",
                   f"{_DICE_RAW}/CIFAR-100/densenet/checkpoint_100.pth.tar",
                   mean_feature="dice-feature-stats/CIFAR-100_densenet_feat_stat.npy",
                   mean_feature_url=f"{_DICE_REPO}/cache/CIFAR-100_densenet_feat_stat.npy"),
    CheckpointSpec("mahalanobis_densenet_svhn", "mahalanobis_densenet_svhn.pth",
                   "a10b4ada687f514bb1ac1544738d4b11a28167b82f444c3765854ba88d6c84e4",
                   "densenet100", 10, *_ODIN, "legacy_state_dict", "svhn",
                   "Mahalanobis (Lee et al. 2018), github.com/pokaxpoka/deep_Mahalanobis_detector",
                   "https://www.dropbox.com/s/9ol1h2tb3xjdpp1/densenet_svhn.pth"),
    CheckpointSpec("energy_wrn40_2_cifar10", "cifar10_wrn_pretrained_epoch_99.pt", None,
                   "wrn40_2", 10, *_ODIN, "state_dict", "cifar10",
                   "Energy OOD (Liu et al. 2020), github.com/wetliu/energy_ood; WRN-40-2 of "
                   "github.com/hendrycks/outlier-exposure", f"{_ENERGY_RAW}/cifar10_wrn_pretrained_epoch_99.pt"),
    CheckpointSpec("energy_wrn40_2_cifar100", "cifar100_wrn_pretrained_epoch_99.pt", None,
                   "wrn40_2", 100, *_ODIN, "state_dict", "cifar100",
                   "Energy OOD (Liu et al. 2020), github.com/wetliu/energy_ood; WRN-40-2 of "
                   "github.com/hendrycks/outlier-exposure", f"{_ENERGY_RAW}/cifar100_wrn_pretrained_epoch_99.pt"),
    # WRN-40-2 trained here (issue 21): the Energy / OE recipe on the JPEG re-encode of all 50,000 CIFAR-10 training
    # images, then energy fine-tuning and OE from it; all three by one GPU command (scripts/gpu_train_wrn.sh, which
    # runs the train.py lines below with a time budget). sha256 None = not trained yet: pin it from the run's
    # metadata.json after copying the files to weights/trained/ (weights/trained/README.md).
    CheckpointSpec("wrn40_2_cifar10_ours", "trained/wrn40_2_cifar10_ours.pt", None,
                   "wrn40_2", 10, *_ODIN, "oodbench", "cifar10",
                   "trained here: WRN-40-2, OE / Energy baseline recipe, JPEG CIFAR-10 train (50,000)", "",
                   make=f"{GPU_SCRIPT}  (= python train.py method=classifier arch=wrn40_2 id=cifar10 train_set=jpeg "
                        "dropout=0.3 amp_dtype=bfloat16 channels_last=true time_budget_s=<fit>)"),
    CheckpointSpec("wrn40_2_cifar10_energy_ft_ours", "trained/wrn40_2_cifar10_energy_ft_ours.pt", None,
                   "wrn40_2", 10, *_ODIN, "oodbench", "cifar10",
                   "trained here: wrn40_2_cifar10_ours + energy fine-tuning (m_in -23, m_out -5, lambda 0.1), "
                   "Tiny-ImageNet outlier pool", "",
                   make=f"{GPU_SCRIPT}  (= python train.py method=energy_ft arch=wrn40_2 id=cifar10 train_set=jpeg "
                        "dropout=0.3 init=<wrn40_2_cifar10_ours file>)"),
    CheckpointSpec("wrn40_2_cifar10_oe_ours", "trained/wrn40_2_cifar10_oe_ours.pt", None,
                   "wrn40_2", 10, *_ODIN, "oodbench", "cifar10",
                   "trained here: wrn40_2_cifar10_ours + Outlier Exposure fine-tuning (lambda 0.5), Tiny-ImageNet "
                   "outlier pool", "",
                   make=f"{GPU_SCRIPT}  (= python train.py method=oe arch=wrn40_2 id=cifar10 train_set=jpeg "
                        "dropout=0.3 init=<wrn40_2_cifar10_ours file>)"),
    # torchvision's published ImageNet weights (torch hub files: the name carries the sha256 prefix, checked by
    # oodbench.models.torchvision_nets.locate_weights, which also looks in torch.hub.get_dir()/checkpoints).
    CheckpointSpec("tv_resnet50_imagenet", "resnet50-0676ba61.pth", None,
                   "resnet50", 1000, *NORMALIZATIONS["imagenet"], "state_dict", "imagenet",
                   "torchvision ResNet50_Weights.IMAGENET1K_V1 (used by ReAct, DICE, ASH for ImageNet)",
                   "https://download.pytorch.org/models/resnet50-0676ba61.pth",
                   "torch hub file; its sha256 must start with 0676ba61",
                   mean_feature="dice-feature-stats/imagenet_resnet50_feat_stat.npy",
                   mean_feature_url="DICE's ImageNet ResNet-50 feature stats (github.com/deeplearning-wisc/dice)"),
    CheckpointSpec("tv_mobilenet_v2_imagenet", "mobilenet_v2-b0353104.pth", None,
                   "mobilenet_v2", 1000, *NORMALIZATIONS["imagenet"], "state_dict", "imagenet",
                   "torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (used by ReAct for ImageNet)",
                   "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
                   "torch hub file; its sha256 must start with b0353104"),
)}


def get_spec(name: str) -> CheckpointSpec:
    """The registered checkpoint ``name``; raises :class:`CheckpointError` listing the choices."""
    if name not in CHECKPOINTS:
        raise CheckpointError(f"unknown checkpoint {name!r}; choose from {', '.join(sorted(CHECKPOINTS))} "
                              "or pass path=... with arch=... for a file of your own")
    return CHECKPOINTS[name]


def check_trained(spec: CheckpointSpec) -> None:
    """A checkpoint trained here whose sha256 is not pinned yet: one line saying so and what makes it."""
    if spec.make and spec.sha256 is None:
        raise CheckpointError(f"checkpoint {spec.name} is not trained yet (no sha256 pinned in "
                              f"oodbench/models/registry.py); make it with: {spec.make}; then copy it to "
                              f"weights/trained/{Path(spec.filename).name} and pin its sha256 "
                              "(weights/trained/README.md)")


def trained_file(spec: CheckpointSpec, weights_dir: Path) -> Path:
    """Where a checkpoint trained here is: ``<weights dir>/<filename>``, else ``weights/trained/`` in the checkout."""
    first = Path(weights_dir) / spec.filename
    second = TRAINED_DIR / Path(spec.filename).name
    return first if first.is_file() or not second.is_file() else second


def build_arch(arch: str, num_classes: int) -> OODNet:
    """An untrained network of a registered architecture."""
    if arch not in ARCHS:
        raise CheckpointError(f"unknown architecture {arch!r}; choose from {', '.join(sorted(ARCHS))}")
    return ARCHS[arch](num_classes)


def _fit(net: OODNet, state: Mapping[str, Tensor], name: str, arch: str, num_classes: int) -> None:
    """Load ``state`` strictly (BatchNorm ``num_batches_tracked`` may be absent) or raise a clear error."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {name} keys do not match arch {arch}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]} (first 3 of {len(missing)} / {len(unexpected)}); "
                              f"choose the right arch= from {', '.join(sorted(ARCHS))}")
    head = state.get("fc.weight", state.get("classifier.1.weight"))
    if head is not None and head.shape[0] != num_classes:
        raise CheckpointError(f"checkpoint {name} has {head.shape[0]} output classes but arch {arch} was "
                              f"asked with {num_classes}; pass num_classes={head.shape[0]}")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items()
             if v.shape != expected[k].shape]
    if wrong:
        raise CheckpointError(f"checkpoint {name} tensor shapes do not match arch {arch}: {wrong[:3]}; "
                              "it was trained with another width/depth")
    net.load_state_dict(state, strict=False)


def _pick(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def load_classifier(spec: CheckpointSpec | str | None, weights_dir: Path | None = None, *,
                    path: Path | None = None, arch: str | None = None, num_classes: int | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    normalization: str | None = None, verify_sha256: bool = True,
                    ) -> tuple[Classifier, dict[str, Any]]:
    """Build, load and return ``(Classifier in eval mode, provenance)`` for a checkpoint.

    ``spec`` is a registered name / spec (file ``weights_dir / spec.filename`` unless ``path`` is given),
    or None / an unregistered name together with ``path``. ``arch``, ``num_classes``, ``mean``/``std``
    (or ``normalization``, a key of :data:`NORMALIZATIONS`) override the spec or the file's ``meta``;
    ``num_classes`` defaults to the size of the file's ``fc`` layer. Provenance: ``name, path, sha256,
    arch, num_classes, mean, std, fmt``. Every failure is a one-line :class:`CheckpointError`.
    """
    if isinstance(spec, str) and (spec in CHECKPOINTS or path is None):
        spec = get_spec(spec)
    known = spec if isinstance(spec, CheckpointSpec) else None
    if known is None and path is None:
        raise CheckpointError("load_classifier needs a registered checkpoint name or path=...")
    root = Path(weights_dir) if weights_dir is not None else resolve("weights")
    if known is not None and known.make and path is None:
        check_trained(known)
        path = trained_file(known, root)
    file = Path(path) if path is not None else root / known.filename  # type: ignore[union-attr]
    name = known.name if known else (spec if isinstance(spec, str) else file.stem)
    if not file.is_file() and known is None:
        what = "is not a regular file" if file.exists() else "not found"
        raise CheckpointError(f"checkpoint file {file} {what}; check the path")
    if not file.is_file() and known.make:
        raise CheckpointError(f"checkpoint {name} not found at {file} nor at {TRAINED_DIR / file.name}; it is made "
                              f"by: {known.make} (weights/trained/README.md)")
    if not file.is_file():
        how = f" ({known.note})" if known.note else ""
        raise CheckpointError(f"checkpoint {name} not found at {file}; download it from {known.url}{how}, "
                              f"save it as {known.filename} in {root} or set OODBENCH_WEIGHTS to its folder")
    digest = sha256_file(file)
    if known is None:  # an unregistered path whose bytes are a registered checkpoint: its sha256 identifies it
        known = next((c for c in CHECKPOINTS.values() if c.sha256 == digest), None)
    if known and known.sha256 and verify_sha256 and digest != known.sha256:
        raise CheckpointError(f"checkpoint {name} at {file} has sha256 {digest[:12]}... but {known.sha256[:12]}... "
                              f"is expected: the file is corrupt or another checkpoint; re-download it from "
                              f"{known.url}, or pass your own file by path (arch.checkpoint=/path/to/file) to use it "
                              "as an unregistered checkpoint")
    state, meta, fmt = read_state_dict(file)
    if normalization is not None:
        if normalization not in NORMALIZATIONS:
            raise CheckpointError(f"unknown normalization {normalization!r}; choose from "
                                  f"{', '.join(sorted(NORMALIZATIONS))} or give mean=/std=")
        mean, std = _pick(mean, NORMALIZATIONS[normalization][0]), _pick(std, NORMALIZATIONS[normalization][1])
    arch = _pick(arch, known and known.arch, meta.get("arch"))
    head = state.get("fc.weight", state.get("classifier.1.weight"))
    num_classes = _pick(num_classes, known and known.num_classes, meta.get("num_classes"),
                        None if head is None else int(head.shape[0]))
    mean = _pick(mean, known and known.mean, meta.get("mean"))
    std = _pick(std, known and known.std, meta.get("std"))
    if arch is None or num_classes is None or mean is None or std is None:
        raise CheckpointError(f"checkpoint {name} ({file}) does not say its arch / class count / normalization; "
                              "pass arch=..., num_classes=... and mean=/std= (or normalization=...)")
    net = build_arch(arch, int(num_classes))
    _fit(net, state, name, arch, int(num_classes))
    model = Classifier(net, mean, std).eval()
    provenance = {"name": name, "path": str(file), "sha256": digest, "arch": arch,
                  "num_classes": int(num_classes), "mean": tuple(float(m) for m in mean),
                  "std": tuple(float(s) for s in std), "fmt": fmt, "training": _training(meta)}
    return model, provenance


def _training(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """How a checkpoint written by ``train.py`` was trained (method, init, data, hyper-parameters, epoch), from its
    own metadata — result rows carry it, so no table guesses a method from a path."""
    if "method" not in meta:
        return None
    init = meta.get("init") or {}
    return {"method": meta["method"], "init": init.get("name") if isinstance(init, Mapping) else init,
            "init_sha256": meta.get("init_sha256"), "data": meta.get("data"), "hyperparams": meta.get("hyperparams"),
            "epoch": meta.get("epoch"), "seed": meta.get("seed")}


def locate_weights(spec: Any, weights_dir: Path | None = None, download: bool = False) -> Path:
    """The file of registered checkpoint ``spec`` (a :class:`CheckpointSpec` or its
    name): ``weights_dir/<filename>``, else ``<hub dir>/checkpoints/<filename>``, else -- only when
    ``download`` -- downloaded from ``spec.url`` into the hub folder. The sha256 prefix of the name is checked;
    a missing file is a :class:`CheckpointError` naming the URL and both places looked in."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    root = Path(weights_dir) if weights_dir is not None else resolve("weights")
    places = [root / spec.filename, hub_checkpoint_dir() / spec.filename]
    found = next((p for p in places if p.is_file()), None)
    if found is None and download:
        found = places[1]
        found.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(spec.url, str(found), hash_prefix=hub_hash_prefix(spec.filename))
        except Exception as err:  # network errors, hash mismatch (the partial file is removed by torch)
            raise CheckpointError(f"checkpoint {spec.name}: download from {spec.url} failed ({err}); save the "
                                  f"file as {places[0]} instead") from None
    if found is None:
        raise CheckpointError(f"checkpoint {spec.name} not found at {places[0]} nor in torch hub's cache "
                              f"{places[1]}; download {spec.url} to either place (or set arch.download=true)")
    check_hub_prefix(found, spec.filename, what=f"checkpoint {spec.name}")
    return found


def load_torchvision_classifier(spec: Any, weights_dir: Path | None = None, download: bool = False, **kwargs: Any):
    """:func:`load_classifier` for a registered torchvision checkpoint, with the file
    found by :func:`locate_weights` (weights dir, then torch hub's cache, then an opt-in download)."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    path = locate_weights(spec, weights_dir, download)
    return load_classifier(spec, weights_dir, path=path, **kwargs)
