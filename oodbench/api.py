"""The Python API: ``oodbench.evaluate(model, id=..., detectors=[...], ood=[...])`` — the engine of ``run.py``
(:class:`~oodbench.runner.evaluation.Evaluation`: one forward pass per (model, set), the same cache, metrics,
bootstrap and provenance rows) for any network and any data.

>>> import oodbench
>>> res = oodbench.evaluate("dice_densenet_cifar10", id="cifar10", detectors=["msp", "energy", ("ash_s", {"p": 90})],
...                         ood=["isun", "gaussian"])
>>> res.table       # one row per (detector, OOD set): metrics in percent with their bootstrap σ
>>> res.summary()   # the paired-bootstrap comparison a sweep summary prints
>>> res.save("runs/mine")  # metrics.csv + scores.npz per detector (as run.py writes them) and summary.md

``model``: a registered checkpoint name (``oodbench.models.CHECKPOINTS``), ``"timm:<name>"`` (its pretrained file in
the Hugging Face cache, offline), or any ``nn.Module`` returning logits — features are the input of ``features``
(``"auto"`` = the last ``nn.Linear``; a module name; or a callable ``features(model, x)``), inputs are pixels in
[0, 1] unless ``normalize=(mean, std)``. An in-memory model is identified by the sha256 of its parameters, so a changed
weight is never served from the cache.

Data: a built-in set name (``oodbench/conf/id``, ``oodbench/conf/ood``), or your own — a ``torch.Tensor``
(N, 3, H, W) of pixels, an ``(images, labels)`` pair, a ``Dataset`` / ``DataLoader`` yielding images or
``(image, label)``, or an
:class:`~oodbench.data.base.ImageSet`. ``fit``: the labelled ID training data detectors that fit need (default: the
built-in ID set's train split).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import nn

from oodbench.conf import group_node
from oodbench.data.base import ImageSet
from oodbench.data.files import remember_digests_in
from oodbench.detectors.base import CheckpointReference, Detector
from oodbench.errors import DataNotAvailable, OodbenchError
from oodbench.paths import resolve
from oodbench.runner.build import build, meta
from oodbench.runner.cache import RepresentationCache
from oodbench.runner.evaluation import DetectorSpec, Evaluation
from oodbench.runner.forward import resolve_device
from oodbench.runner.session import Session, model_digest
from oodbench.store import derive_run_name, write_csv

log = logging.getLogger("oodbench")
PCT = ["fpr95", "auroc", "aupr_in", "aupr_out", "detection_error"]
DetectorArg = str | tuple[str, Mapping[str, Any]] | Detector


# ------------------------------------------------------------------------------------------- data

def as_image_set(data: Any, name: str) -> ImageSet:
    """Your data as an :class:`ImageSet` (pixels in [0, 1] or uint8, NHWC), identified by the sha256 of its bytes."""
    if isinstance(data, ImageSet):
        return data
    labels = None
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], (int, float)):
        data, labels = data
    if isinstance(data, torch.utils.data.DataLoader):
        parts = list(data)
        xs = [b[0] if isinstance(b, (list, tuple)) else b for b in parts]
        ys = [b[1] for b in parts if isinstance(b, (list, tuple)) and len(b) > 1]
        data, labels = torch.cat(xs), (torch.cat(ys) if ys and labels is None else labels)
    elif isinstance(data, torch.utils.data.Dataset):
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        xs = [torch.as_tensor(np.asarray(it[0] if isinstance(it, (list, tuple)) else it)) for it in items]
        if xs and xs[0].ndim == 3 and xs[0].shape[-1] in (1, 3) and xs[0].shape[0] not in (1, 3):  # HWC (PIL)
            xs = [x.permute(2, 0, 1) for x in xs]
        data = torch.stack(xs)
        if items and isinstance(items[0], (list, tuple)) and len(items[0]) > 1 and labels is None:
            labels = torch.as_tensor([int(it[1]) for it in items])
    x = torch.as_tensor(data)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise OodbenchError(f"{name}: images must be (N, 3, H, W) pixels, got shape {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.is_floating_point() and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
        raise OodbenchError(f"{name}: float images must be pixels in [0, 1] (got {float(x.min()):.3g} to "
                            f"{float(x.max()):.3g}); normalization belongs to the model: "
                            "evaluate(..., normalize=(mean, std))")
    images = np.ascontiguousarray(x.permute(0, 2, 3, 1).cpu().numpy())
    images = images if images.dtype == np.uint8 else images.astype(np.float32)
    y = None if labels is None else np.asarray(torch.as_tensor(labels).cpu().numpy(), dtype=np.int64)
    if y is not None and len(y) != len(images):
        raise OodbenchError(f"{name}: {len(y)} labels for {len(images)} images")
    import hashlib

    h = hashlib.sha256(images.tobytes())
    h.update(b"" if y is None else y.tobytes())
    return ImageSet(name=name, images=images, labels=y, source=f"in-memory data ({len(images)} images)",
                    n_total=len(images), indices=np.arange(len(images)), content_id=f"memory:{h.hexdigest()}")


def _builtin(group: str, name: str, id_name: str, split: str | None = None) -> ImageSet:
    node = group_node(group, [name] if group == "ood" else name)
    node = node[name] if group == "ood" else node
    cfg = OmegaConf.create({"id": {"name": id_name}, "node": node})
    kw = {"split": split} if split else {}
    return build(cfg.node, f"{'OOD' if group == 'ood' else 'ID'} set {name}", f"{group}.{name}" if group == "ood"
                 else "id", data_dir=str(resolve("data")), cache_dir=str(resolve("cache")), **kw)


def _sets(ood: Any, id_name: str) -> tuple[dict[str, ImageSet], dict[str, str]]:
    items = ood.items() if isinstance(ood, Mapping) else [(o, o) if isinstance(o, str) else (f"ood{i}", o)
                                                          for i, o in enumerate(ood)]
    sets, missing = {}, {}
    for name, data in items:
        try:
            sets[name] = _builtin("ood", data, id_name) if isinstance(data, str) else as_image_set(data, name)
        except DataNotAvailable as err:
            log.warning("skipped %s: %s", name, err)
            missing[name] = str(err)
    return sets, missing


# ------------------------------------------------------------------------------------------- model

def load(model: Any, features: Any = "auto", normalize: Sequence[Sequence[float]] | None = None,
         probe_shape: Sequence[int] = (2, 3, 32, 32)) -> tuple[nn.Module, dict[str, Any], CheckpointReference]:
    """(network with features + head, provenance, what its authors published beside it) for a model argument."""
    from oodbench.models.module import wrap
    from oodbench.models.registry import CHECKPOINTS, load_classifier

    weights = resolve("weights")
    if isinstance(model, str) and model.startswith("timm:"):
        from oodbench.models.timm_net import load_timm

        net, prov = load_timm(model[5:], checkpoint="timm-cache", weights_dir=str(weights))
        return net, prov, CheckpointReference(prov["name"], weights)
    if isinstance(model, str):
        if model not in CHECKPOINTS:
            raise OodbenchError(f"unknown model {model!r}; give an nn.Module, 'timm:<name>', or a registered "
                                f"checkpoint: {', '.join(sorted(CHECKPOINTS))}")
        net, prov = load_classifier(model, weights)
        spec = CHECKPOINTS[model]
        ref = CheckpointReference(model, weights, weights / spec.mean_feature if spec.mean_feature else None,
                                  spec.mean_feature_url)
        return net, prov, ref
    if not isinstance(model, nn.Module):
        raise OodbenchError(f"model must be an nn.Module, 'timm:<name>' or a registered checkpoint name, not "
                            f"{type(model).__name__}")
    mean, std = normalize if normalize is not None else (None, None)
    net = wrap(model, features, mean, std, probe_shape)
    digest = model_digest(net)
    name = f"in-memory {type(model).__name__}"
    prov = {"name": name, "sha256": digest, "arch": type(model).__name__, "path": "",
            "num_classes": getattr(net, "num_classes", None), "features": getattr(net, "layer_name", "features")}
    return net, prov, CheckpointReference(name, weights)


# ------------------------------------------------------------------------------------------- detectors

def _spec(det: DetectorArg, id_name: str) -> tuple[DetectorSpec, dict[str, Any]]:
    """A detector argument as the engine's spec and its config (for the rows' identity)."""
    if isinstance(det, Detector):
        name = type(det).__name__.lower()
        return DetectorSpec(name, lambda **_: det), {"object": repr(det)}
    name, overrides = (det, {}) if isinstance(det, str) else (det[0], dict(det[1]))
    try:
        node = group_node("detector", name)
    except FileNotFoundError as err:
        raise OodbenchError(str(err).replace("Could not find 'detector/", "unknown detector '")) from None
    cfg = OmegaConf.create({"id": {"name": id_name}, "detector": node})
    for k, v in overrides.items():
        OmegaConf.update(cfg, f"detector.{k}", v, merge=True, force_add=True)
    resolved = OmegaConf.to_container(cfg.detector, resolve=True)
    return (DetectorSpec(name, lambda **kw: build(cfg.detector, f"detector {name}", "detector", **kw),
                         meta(cfg.detector).get("per_ood", {})), resolved)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------- results

@dataclass
class Results:
    """What :func:`evaluate` returns: provenance rows and per-image scores of every (detector, OOD set)."""

    rows: list[dict[str, Any]]
    scores: dict[str, dict[str, np.ndarray]] = field(repr=False)  # run name → {id__<set>, ood__<set>}

    @property
    def frame(self) -> pd.DataFrame:
        """Every row with its full provenance (the columns of ``metrics.csv``)."""
        return pd.DataFrame(self.rows)

    @property
    def table(self) -> pd.DataFrame:
        """One row per (detector, OOD set): metrics in percent, each with its bootstrap σ (``<metric>_std``)."""
        df = self.frame
        ok = df[df.status == "ok"]
        cols = ["detector", "ood_dataset", "n_id", "n_ood"]
        out = ok[cols].copy()
        for m in PCT:
            out[m] = 100 * ok[m]
            if f"{m}_std" in ok:
                out[f"{m}_std"] = 100 * ok[f"{m}_std"]
        return out.reset_index(drop=True)

    def summary(self) -> str:
        """Per OOD set, the best detector by AUROC against every other: paired-bootstrap ΔAUROC / ΔFPR95 with 95 %
        intervals and p (the section a sweep's ``summary.md`` prints)."""
        from oodbench.runner.summary import paired_lines

        ok = self.frame[self.frame.status == "ok"].copy()
        ok["setting"] = ok.detector
        lines, _ = paired_lines(ok, self.scores)
        return "\n".join(lines) if lines else "(fewer than two detectors with per-image scores on the same images)"

    def save(self, directory: str | Path) -> Path:
        """The files ``run.py`` writes, one directory per detector (``metrics.csv``, ``scores.npz``), and the sweep's
        ``summary.md`` / ``summary.csv``; returns the directory."""
        from oodbench.data.files import atomic_savez
        from oodbench.runner.summary import summarize

        out = Path(directory).expanduser().resolve()
        if out.exists() and any(out.iterdir()):
            raise OodbenchError(f"{out} is not empty: save into a new directory (its summary would mix other rows)")
        df = self.frame
        for i, (run, rows) in enumerate(df.groupby("run_name", sort=False)):
            cell = out / f"{i}_{rows.detector.iloc[0]}"
            cell.mkdir(parents=True, exist_ok=True)
            write_csv(rows, cell / "metrics.csv")
            atomic_savez(cell / "scores.npz", **self.scores[str(run)])
        summarize(out)
        return out

    def plot(self, directory: str | Path) -> list[Path]:
        """A score histogram and ROC curve per (detector, OOD set) as PNGs (``pip install matplotlib``)."""
        from oodbench.figures import score_figures

        return [p for run, rows in self.frame.groupby("run_name", sort=False)
                for p in score_figures(rows, self.scores[str(run)], Path(directory))]

    def __repr__(self) -> str:
        t = self.table
        shown = t[["detector", "ood_dataset", "fpr95", "auroc"]].to_string(index=False, float_format="%.2f")
        return f"Results({len(t)} rows; percent)\n{shown}"


# ------------------------------------------------------------------------------------------- evaluate

def evaluate(model: Any, id: Any = "cifar10", detectors: Iterable[DetectorArg] = ("msp", "energy"),  # noqa: A002
             ood: Any = ("isun", "lsun_resize", "gaussian"), *, features: Any = "auto", fit: Any = None,
             protocol: str | Mapping[str, Any] = "default", normalize: Sequence[Sequence[float]] | None = None,
             device: str = "auto", batch_size: int = 128, num_workers: int | str = "auto", cache: bool = True,
             id_name: str | None = None, **protocol_overrides: Any) -> Results:
    """Score every detector on every OOD set against the ID set with one forward pass per (model, set) — the engine
    ``run.py`` runs (module docstring for the arguments). ``protocol``: a name (``conf/protocol``) or a mapping;
    keyword arguments override its fields (e.g. ``max_ood=500``, ``bootstrap=0``)."""
    id_label = id_name or (id if isinstance(id, str) else "id")
    p = OmegaConf.create(OmegaConf.to_container(group_node("protocol", protocol), resolve=True)
                         if isinstance(protocol, str) else dict(protocol))
    for k, v in protocol_overrides.items():
        if k not in p:
            raise OodbenchError(f"unknown protocol option {k!r}; choose from {', '.join(map(str, p))}")
        p[k] = v
    from oodbench.runner.checks import OPTIONS, check_table

    check_table(OmegaConf.create({"protocol": p, "batch_size": batch_size, "num_workers": num_workers,
                                  "device": device, "cache": cache}), OPTIONS)
    specs = [_spec(d, id_label) for d in detectors]
    cache_dir = resolve("cache")
    remember_digests_in(cache_dir)
    id_set = _builtin("id", id, id_label) if isinstance(id, str) else as_image_set(id, id_label)
    net, prov, ref = load(model, features, normalize, (2, 3, *id_set.images.shape[1:3]))
    dev = resolve_device(device)
    session = Session(net.to(dev), prov, dev, RepresentationCache(cache_dir, enabled=cache), batch_size,
                      num_workers, ref)
    if fit is not None:
        fit_set = lambda: as_image_set(fit, f"{id_label} fit")  # noqa: E731
    elif isinstance(id, str):
        fit_set = lambda: _builtin("id", id, id_label, split="train")  # noqa: E731
    else:
        fit_set = None
    sets, missing = _sets(ood, id_label)
    num_classes = meta(group_node("id", id)).get("num_classes") if isinstance(id, str) else None
    model_id = {"name": prov["name"], "sha256": prov["sha256"], "features": prov.get("features", "")}
    rows, scores = [], {}
    ev: Evaluation | None = None
    for spec, det_cfg in specs:
        for det in spec.instances(list(sets) + list(missing)):
            det.bind(session.reference)
        config = {"api": True, "model": model_id, "id": {"name": id_label, "content": id_set.content_id},
                  "detector": det_cfg, "detector_name": spec.name, "protocol": OmegaConf.to_container(p),
                  "ood": {k: v.content_id for k, v in sets.items()}, "arch": {"checkpoint": prov["name"]}}
        config["run_name"] = derive_run_name(config)
        if ev is None:
            ev = Evaluation(session, id_set, sets, missing, p, fit_set, num_classes, config)
        ev.config = config
        cell_rows, cell_scores = ev.run(spec)
        rows += cell_rows
        scores[config["run_name"]] = cell_scores
    return Results(rows, scores)
