"""``python train.py``: turn the Hydra config into data, a model, a method and settings; train; print the result."""

from __future__ import annotations

import json
import logging
import sys
import time
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
from oodbench.train.data import DeviceBatches, EpochBatches, limit, load_id_train, load_jpeg_cifar, load_outliers
from oodbench.train.evaluate import accuracy_report
from oodbench.train.loop import AMP_DTYPES, Settings, train
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


def resolve_flag(value: Any, device: torch.device, what: str) -> bool:
    """``auto`` = on for CUDA only; else a boolean."""
    if value == "auto":
        return device.type == "cuda"
    if not isinstance(value, bool):
        raise OodbenchError(f"{what} must be auto, true or false, got {value!r}")
    return value


def set_dropout(model: Classifier, p: float | None, arch: str) -> float | None:
    """Dropout for training (OE / Energy's WRN: 0.3); None leaves the architecture's default (no dropout)."""
    if p is None:
        return None
    if not hasattr(model.net, "set_drop_rate"):
        if float(p) == 0.0:
            return 0.0
        raise OodbenchError(f"dropout={p} is supported for the WRN architectures only, not {arch}; use dropout=null")
    try:
        model.net.set_drop_rate(float(p))
    except ValueError as err:
        raise OodbenchError(f"dropout: {err}") from None
    return float(p)


def load_train_set(cfg: DictConfig, ds: DictConfig, paths: dict[str, Path]):
    """``train_set=auto``: torchvision's official files, else the exact subset; ``jpeg``: the JPEG re-encode."""
    kind = str(cfg.get("train_set", "auto"))
    if kind == "auto":
        return load_id_train(str(cfg.id), paths["data"], str(ds.subset), ds.root)
    if kind != "jpeg":
        raise OodbenchError(f"train_set must be auto or jpeg, got {kind!r}")
    jp = ds.get("jpeg")
    if not jp:
        raise OodbenchError(f"train_set=jpeg: there is no JPEG training set for {cfg.id} (datasets.{cfg.id}.jpeg); "
                            "use train_set=auto")
    data = load_jpeg_cifar(str(cfg.id), paths["data"], paths["cache"], str(jp.train), jp.get("train_sha256"),
                           "train", list(jp.classes), int(jp.n_train))
    log.warning("training on %s: a lossy JPEG re-encode, not the official pixels (evaluate on both test sets)",
                data.describe())
    return data


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
    "train_set": Option("choice", values=("auto", "jpeg")),
    "train_limit": Option("int", lo=1, nullable=True),
    "outlier_limit": Option("int", lo=1, nullable=True),
    "dropout": Option("number", lo=0, hi=1, nullable=True),
    "amp_dtype": Option("choice", values=("float16", "bfloat16")),
    "channels_last": Option("bool", auto=True),
    "data_on_device": Option("bool", auto=True),
    "check_every": Option("int", lo=1),
    "time_budget_s": Option("number", lo=1e-9, nullable=True),
}


def main(cfg: DictConfig) -> Path:
    """Run one training job; return the path of ``final.pt``."""
    t_start = time.time()
    check_table(cfg, TRAIN_OPTIONS)  # one line naming a bad option, before any work
    paths = {k: resolve(k, cfg.paths.get(k)) for k in ("data", "weights", "cache")}
    if cfg.id not in cfg.datasets:
        raise OodbenchError(f"unknown id {cfg.id!r}; choose from {', '.join(cfg.datasets)}")
    ds = cfg.datasets[cfg.id]
    method: Method = build(cfg.method, f"method {cfg.method_name}")
    arch = target_arch(str(cfg.arch), method)
    device = resolve_device(str(cfg.device))
    amp = resolve_amp(cfg.amp, device)
    amp_dtype = str(cfg.get("amp_dtype", "float16"))
    if amp_dtype not in AMP_DTYPES:
        raise OodbenchError(f"amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {amp_dtype!r}")
    on_device = resolve_flag(cfg.get("data_on_device", "auto"), device, "data_on_device")
    channels_last = resolve_flag(cfg.get("channels_last", False), device, "channels_last")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(int(cfg.seed))
    model, init_info = init_model(str(cfg.arch), arch, int(ds.num_classes), cfg.init, str(cfg.normalization),
                                  paths["weights"])
    dropout = set_dropout(model, cfg.get("dropout"), arch)
    id_set = limit(load_train_set(cfg, ds, paths), cfg.get("train_limit"), int(cfg.seed), "train_limit")
    o = cfg.outliers
    outliers = (load_outliers(o.archive, paths["data"], paths["cache"], o.sha256, o.member_glob, int(o.size),
                              str(cfg.id)) if method.needs_outliers else None)
    if outliers is not None:
        outliers = limit(outliers, cfg.get("outlier_limit"), int(cfg.seed), "outlier_limit")
    batches = EpochBatches(id_set, outliers, int(cfg.batch_size), int(cfg.outlier_batch_size), int(cfg.seed))
    feed = DeviceBatches(batches, device) if on_device else batches
    config = OmegaConf.to_container(cfg, resolve=True)
    recipe = {"dropout": dropout, "amp": amp, "amp_dtype": amp_dtype if amp else None,
              "channels_last": channels_last, "data_on_device": on_device,
              "augmentation": "random 32x32 crop of the 4-px zero-padded image + horizontal flip (p 0.5), ID and "
                              "outliers, seeded per (seed, epoch, batch)",
              "optimizer": f"SGD momentum {cfg.momentum} nesterov {cfg.nesterov} weight decay {cfg.weight_decay}",
              "schedule": f"cosine per step from lr {cfg.lr} to {cfg.lr_min}", "batch_size": int(cfg.batch_size),
              "outlier_batch_size": int(cfg.outlier_batch_size) if outliers is not None else None}
    meta = {
        "arch": arch, "num_classes": int(ds.num_classes), "id_dataset": str(cfg.id), "method": method.name,
        "mean": [float(v) for v in model.mean.flatten()], "std": [float(v) for v in model.std.flatten()],
        "data": {"id": id_set.describe(), "id_count": len(id_set), "id_content": id_set.content_id,
                 "id_notes": list(id_set.notes),
                 "outliers": None if outliers is None else outliers.describe(),
                 "outlier_count": 0 if outliers is None else len(outliers),
                 "outlier_content": None if outliers is None else outliers.content_id},
        "init": init_info, "init_sha256": init_info.get("sha256"), "seed": int(cfg.seed), "amp": amp,
        "recipe": recipe, "device": str(device), "oodbench_version": oodbench.__version__,
        "torch_version": torch.__version__, "config": config,
    }
    settings = Settings(epochs=int(cfg.epochs), lr=float(cfg.lr), momentum=float(cfg.momentum),
                        nesterov=bool(cfg.nesterov), weight_decay=float(cfg.weight_decay), lr_min=float(cfg.lr_min),
                        max_steps=None if cfg.max_steps is None else int(cfg.max_steps), amp=amp,
                        num_workers=int(cfg.num_workers), resume=bool(cfg.resume),
                        keep_last=None if cfg.keep_last is None else int(cfg.keep_last), amp_dtype=amp_dtype,
                        channels_last=channels_last, check_every=int(cfg.get("check_every", 1)),
                        time_budget_s=None if cfg.get("time_budget_s") is None else float(cfg.time_budget_s))
    out = Path(str(cfg.out)).expanduser().resolve()
    log.info("%s on %s: %s | init %s | %s | %s%s", method.name, arch, id_set.describe(),
             init_info.get("name"), feed.describe(), device, f" (amp {amp_dtype})" if amp else "")
    t_train = time.time()
    final = train(model, method, feed, settings, out, meta, device)
    train_s = time.time() - t_train
    weights = out / "weights.pt"
    ev = cfg.get("eval") or {}
    acc = (accuracy_report(model, cfg, ds, paths, device)
           if resolve_flag(ev.get("enabled", "auto"), device, "eval.enabled") else {})
    info = write_metadata(out, final, weights, meta, acc, train_s, time.time() - t_start, device)
    detector = "mcd" if method.two_heads else "energy"
    arch_args = f"arch={cfg.arch}" + (f" arch.name={arch}" if arch != cfg.arch else "")
    for name, a in acc.items():
        print(f"accuracy {name}: {100 * a['top1']:.2f}% ({a['n']} images)")
    print(f"final checkpoint: {final}\nsha256: {sha256_file(final)}\nweights (state_dict + meta): {weights} sha256 "
          f"{info['sha256']}\nepochs: {info['epochs']['trained']} of {info['epochs']['requested']}\nevaluate: "
          f"python run.py id={cfg.id} {arch_args} arch.checkpoint={final} detector={detector}")
    return final


def write_metadata(out: Path, final: Path, weights: Path, meta: dict[str, Any], acc: dict[str, Any],
                   train_s: float, total_s: float, device: torch.device) -> dict[str, Any]:
    """``<out>/metadata.json``: what the weights file is (sha256), how it was made, and what it scores."""
    from oodbench.runner.provenance import git_commit

    ckpt = torch.load(final, map_location="cpu", weights_only=True)
    m = ckpt["meta"]
    sched = m.get("schedule") or {}
    rows = []
    if (out / "log.csv").is_file():
        import pandas as pd

        rows = pd.read_csv(out / "log.csv").to_dict("records")
    info = {
        "file": weights.name, "sha256": sha256_file(weights), "bytes": weights.stat().st_size,
        "final_pt": final.name, "final_pt_sha256": sha256_file(final),
        "arch": m["arch"], "num_classes": m["num_classes"], "id_dataset": m["id_dataset"], "method": m["method"],
        "method_hyperparams": m["hyperparams"]["method"], "init": m["init"], "recipe": m.get("recipe"),
        "settings": m["hyperparams"]["settings"], "batches": m["hyperparams"]["batches"], "data": m["data"],
        "epochs": {"requested": sched.get("epochs_requested"), "trained": m["epoch"],
                   "planned": sched.get("epochs"), "time_budget_s": sched.get("time_budget_s"),
                   "fixed_after_epoch": sched.get("fixed_after_epoch"),
                   "estimate_s_per_epoch": sched.get("estimate_s_per_epoch"), "global_step": m["global_step"],
                   "partial_last_epoch": m.get("partial_epoch")},
        "accuracy": acc,
        "timings": {"train_loop_s": round(train_s, 2), "job_s": round(total_s, 2),
                    "epoch_s": [r.get("seconds") for r in rows]},
        "final_epoch_log": m.get("last_epoch_log"),
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_version": torch.__version__, "oodbench_version": oodbench.__version__, "git_commit": git_commit(),
        "command": "python train.py " + " ".join(sys.argv[1:]),
    }
    (out / "metadata.json").write_text(json.dumps(info, indent=1, sort_keys=True, default=str) + "\n")
    return info
