"""``python train.py``: turn the Hydra config into data, a model, a method and settings; train; print the result."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import oodbench
from oodbench.data.files import sha256_file
from oodbench.errors import OodbenchError
from oodbench.models import ARCHS, CHECKPOINTS, NORMALIZATIONS, Classifier, build_arch, load_classifier
from oodbench.models.legacy import read_state_dict
from oodbench.models.two_head import SUFFIX, expand_state
from oodbench.paths import resolve
from oodbench.runner.build import build
from oodbench.runner.checks import Option, check_table
from oodbench.runner.forward import resolve_device
from oodbench.train.data import EpochBatches, load_id_train, load_outliers
from oodbench.train.loop import Settings, train
from oodbench.train.methods import Method

log = logging.getLogger("oodbench")


def resolve_amp(amp: Any, device: torch.device) -> bool:
    """``auto`` = on for CUDA only; ``true`` on another device is an error."""
    if amp == "auto":
        return device.type == "cuda"
    if amp is True and device.type != "cuda":
        raise OodbenchError(f"amp=true needs a CUDA device, but the run is on {device}; use amp=auto or amp=false")
    if not isinstance(amp, bool):
        raise OodbenchError(f"amp must be auto, true or false, got {amp!r}")
    return amp


def target_arch(arch: str, method: Method) -> str:
    name = arch + (SUFFIX if method.two_heads else "")
    if name not in ARCHS:
        mcd = sorted(a[: -len(SUFFIX)] for a in ARCHS if a.endswith(SUFFIX))
        hint = f"; method {method.name} supports arch={', '.join(mcd)}" if method.two_heads else ""
        raise OodbenchError(f"unknown architecture {name!r}{hint}; choose arch from "
                            f"{', '.join(sorted(a for a in ARCHS if not a.endswith(SUFFIX)))}")
    return name


def init_model(base_arch: str, arch: str, num_classes: int, init: str | None, normalization: str,
               weights_dir: Path) -> tuple[Classifier, dict[str, Any]]:
    """The network to train: from scratch (``init`` None) or from a registered checkpoint / file; a two-head
    ``arch`` initialised from a one-head ``base_arch`` checkpoint gets both heads from its ``fc``."""
    if init is None:
        if normalization not in NORMALIZATIONS:
            raise OodbenchError(f"unknown normalization {normalization!r}; choose from {', '.join(NORMALIZATIONS)}")
        mean, std = NORMALIZATIONS[normalization]
        return Classifier(build_arch(arch, num_classes), mean, std), {"name": None, "note": "from scratch"}
    if init in CHECKPOINTS:
        loaded, prov = load_classifier(init, weights_dir)
    else:
        path = Path(init).expanduser()
        if not path.exists() and not path.is_absolute() and (weights_dir / path).exists():
            path = weights_dir / path
        if not path.is_file():
            raise OodbenchError(f"init checkpoint {init!r} is neither a registered name ({', '.join(CHECKPOINTS)}) "
                                f"nor a file; pass init=<name|path> or init=null to train from scratch")
        _, file_meta, _ = read_state_dict(path)
        hints = {} if file_meta.get("arch") else {"arch": base_arch}
        if file_meta.get("mean") is None:
            hints["normalization"] = normalization
        loaded, prov = load_classifier(None, weights_dir, path=path, **hints)
    if prov["num_classes"] != num_classes:
        raise OodbenchError(f"init checkpoint {prov['name']} has {prov['num_classes']} classes but the ID set has "
                            f"{num_classes}; pick the checkpoint of the same ID set")
    info = {k: prov[k] for k in ("name", "path", "sha256", "arch", "fmt")}
    if prov["arch"] == arch:
        return loaded, info
    if prov["arch"] == base_arch and arch == base_arch + SUFFIX:
        net = build_arch(arch, num_classes)
        net.load_state_dict(expand_state(loaded.net.state_dict()))
        return Classifier(net, prov["mean"], prov["std"]), dict(info, note="both heads initialised from fc")
    raise OodbenchError(f"init checkpoint {prov['name']} is a {prov['arch']} network but arch={base_arch} was "
                        f"asked; use arch={prov['arch'].removesuffix(SUFFIX)} or another init=")


TRAIN_OPTIONS: dict[str, Option] = {
    "epochs": Option("int", lo=1),
    "lr": Option("number", lo=0),
    "lr_min": Option("number", lo=0),
    "momentum": Option("number", lo=0, hi=1),
    "nesterov": Option("bool"),
    "weight_decay": Option("number", lo=0),
    "batch_size": Option("int", lo=1),
    "outlier_batch_size": Option("int", lo=1),
    "seed": Option("int", lo=0),
    "device": Option("device"),
    "amp": Option("bool", auto=True),
    "max_steps": Option("int", lo=1, nullable=True),
    "resume": Option("bool"),
    "keep_last": Option("int", lo=1, nullable=True),
    "num_workers": Option("int", lo=0),
}


def main(cfg: DictConfig) -> Path:
    """Run one training job; return the path of ``final.pt``."""
    check_table(cfg, TRAIN_OPTIONS)  # one line naming a bad option, before any work
    paths = {k: resolve(k, cfg.paths.get(k)) for k in ("data", "weights", "cache")}
    if cfg.id not in cfg.datasets:
        raise OodbenchError(f"unknown id {cfg.id!r}; choose from {', '.join(cfg.datasets)}")
    ds = cfg.datasets[cfg.id]
    method: Method = build(cfg.method, f"method {cfg.method_name}")
    arch = target_arch(str(cfg.arch), method)
    device = resolve_device(str(cfg.device))
    amp = resolve_amp(cfg.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(int(cfg.seed))
    model, init_info = init_model(str(cfg.arch), arch, int(ds.num_classes), cfg.init, str(cfg.normalization),
                                  paths["weights"])
    id_set = load_id_train(str(cfg.id), paths["data"], str(ds.subset), ds.root)
    o = cfg.outliers
    outliers = (load_outliers(o.archive, paths["data"], paths["cache"], o.sha256, o.member_glob, int(o.size),
                              str(cfg.id)) if method.needs_outliers else None)
    batches = EpochBatches(id_set, outliers, int(cfg.batch_size), int(cfg.outlier_batch_size), int(cfg.seed))
    config = OmegaConf.to_container(cfg, resolve=True)
    meta = {
        "arch": arch, "num_classes": int(ds.num_classes), "id_dataset": str(cfg.id), "method": method.name,
        "mean": [float(v) for v in model.mean.flatten()], "std": [float(v) for v in model.std.flatten()],
        "data": {"id": id_set.describe(), "id_count": len(id_set), "id_content": id_set.content_id,
                 "outliers": None if outliers is None else outliers.describe(),
                 "outlier_count": 0 if outliers is None else len(outliers),
                 "outlier_content": None if outliers is None else outliers.content_id},
        "init": init_info, "init_sha256": init_info.get("sha256"), "seed": int(cfg.seed), "amp": amp,
        "device": str(device), "oodbench_version": oodbench.__version__, "torch_version": torch.__version__,
        "config": config,
    }
    settings = Settings(epochs=int(cfg.epochs), lr=float(cfg.lr), momentum=float(cfg.momentum),
                        nesterov=bool(cfg.nesterov), weight_decay=float(cfg.weight_decay), lr_min=float(cfg.lr_min),
                        max_steps=None if cfg.max_steps is None else int(cfg.max_steps), amp=amp,
                        num_workers=int(cfg.num_workers), resume=bool(cfg.resume),
                        keep_last=None if cfg.keep_last is None else int(cfg.keep_last))
    out = Path(str(cfg.out)).expanduser().resolve()
    log.info("%s on %s: %s | init %s | %s | %s%s", method.name, arch, id_set.describe(),
             init_info.get("name"), batches.describe(), device, " (amp)" if amp else "")
    final = train(model, method, batches, settings, out, meta, device)
    detector = "mcd" if method.two_heads else "energy"
    arch_args = f"arch={cfg.arch}" + (f" arch.name={arch}" if arch != cfg.arch else "")
    print(f"final checkpoint: {final}\nsha256: {sha256_file(final)}\nevaluate: python run.py id={cfg.id} "
          f"{arch_args} arch.checkpoint={final} detector={detector}")
    return final
