"""The peer side of ``scripts/bench.py``: pytorch-ood 0.4 running the product benchmark's eight detectors on the same
checkpoint and images, as one process (its start and imports included, like oodbench's side).

``--mode natural``: as pytorch-ood's documentation writes it — per detector, ``fit(loader)`` where it fits, then
``detector(x)`` per batch of a DataLoader: the network runs for every detector (and again over the fit set for the
five that fit). ``--mode careful``: a user who shares one pass — features and logits of every image once, then
``fit_features`` / ``predict_features`` (and the logit scores on the logits). The images come from oodbench's own
loaders (the same archives, decoded into this process's own empty cache), so both sides decode the same pixels.
Prints one JSON line: per-detector AUROC per OOD set, and the images the network saw.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

DETECTORS = ["msp", "energy", "maxlogit", "mahalanobis", "knn", "vim", "react", "dice"]
FITS = {"mahalanobis", "knn", "vim", "react", "dice"}


def _sets(args: argparse.Namespace) -> tuple[dict[str, object], object]:
    from omegaconf import OmegaConf

    from oodbench.conf import group_node
    from oodbench.data.base import protocol_subset
    from oodbench.data.cifar import load_cifar
    from oodbench.paths import resolve
    from oodbench.runner.build import build

    data, cache = str(resolve("data")), str(resolve("cache"))
    kw = dict(data_dir=data, subset="cifar10/cifar10-exact-subset.npz")
    tests = {"id": protocol_subset(load_cifar("cifar10", **kw), max_images=args.n_id)}
    for name in args.sets.split(","):
        node = OmegaConf.create({"id": {"name": "cifar10"}, "n": group_node("ood", [name])[name]})
        tests[name] = protocol_subset(build(node.n, name, data_dir=data, cache_dir=cache), max_images=args.n_ood)
    fit = protocol_subset(load_cifar("cifar10", split="train", **kw), max_images=args.n_fit)
    return tests, fit


def _loader(s: object, bs: int, with_labels: bool = False) -> torch.utils.data.DataLoader:
    x = torch.cat(list(s.batches(len(s))))  # type: ignore[attr-defined]
    y = torch.from_numpy(s.labels).long() if with_labels and s.labels is not None else torch.zeros(len(x))  # type: ignore[attr-defined]
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=bs, shuffle=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["natural", "careful"], required=True)
    ap.add_argument("--checkpoint", default="dice_densenet_cifar10")
    ap.add_argument("--sets", default="isun,lsun_resize")
    ap.add_argument("--n-id", type=int, default=None)
    ap.add_argument("--n-ood", type=int, default=1000)
    ap.add_argument("--n-fit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    from pytorch_ood.detector import DICE, KNN, EnergyBased, Mahalanobis, MaxLogit, MaxSoftmax, ReAct, ViM

    from oodbench.metrics import auroc
    from oodbench.models.registry import load_classifier

    model, _ = load_classifier(args.checkpoint)
    model.eval()
    tests, fit = _sets(args)
    w, b = model.net.fc.weight.detach(), model.net.fc.bias.detach()
    d = model.net.fc.in_features // 2  # ViM's principal dimension as oodbench's rule gives it below 768-d
    seen = 0
    scores: dict[str, dict[str, np.ndarray]] = {}
    if args.mode == "natural":
        loaders = {k: _loader(s, args.batch_size) for k, s in tests.items()}
        fit_loader = _loader(fit, args.batch_size, with_labels=True)
        make = {"msp": lambda: MaxSoftmax(model), "energy": lambda: EnergyBased(model),
                "maxlogit": lambda: MaxLogit(model), "mahalanobis": lambda: Mahalanobis(model.features),
                "knn": lambda: KNN(model.features), "vim": lambda: ViM(model.features, d=d, w=w, b=b),
                "react": lambda: ReAct(backbone=model.features, head=model.head, percentile=0.9),
                "dice": lambda: DICE(model.features, w=w, b=b, p=0.9)}
        with torch.no_grad():
            for name in DETECTORS:
                det = make[name]()
                if name in FITS:
                    det.fit(fit_loader)
                    seen += len(fit)
                scores[name] = {k: -torch.cat([det(x) for x, _ in ld]).double().numpy() for k, ld in loaders.items()}
                seen += sum(len(s) for s in tests.values())
    else:
        def reps(s: object) -> tuple[torch.Tensor, torch.Tensor]:
            feats = torch.cat([model.features(x) for x, _ in _loader(s, args.batch_size)])
            return feats, model.head(feats)

        with torch.no_grad():
            rep = {k: reps(s) for k, s in tests.items()}
            fit_f, _ = reps(fit)
            seen = len(fit) + sum(len(s) for s in tests.values())
            fit_y = torch.from_numpy(fit.labels).long()
            logit = {"msp": MaxSoftmax.score, "energy": EnergyBased.score, "maxlogit": MaxLogit.score}
            for name, fn in logit.items():
                scores[name] = {k: -fn(lg).double().numpy() for k, (_, lg) in rep.items()}
            feat = {"mahalanobis": Mahalanobis(None), "knn": KNN(None), "vim": ViM(None, d=d, w=w, b=b),
                    "dice": DICE(None, w=w, b=b, p=0.9)}
            for name, det in feat.items():
                det.fit_features(fit_f, fit_y)
                scores[name] = {k: -det.predict_features(f).double().numpy() for k, (f, _) in rep.items()}
            react = ReAct(backbone=lambda f: f, head=model.head, percentile=0.9)
            react.fit(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(fit_f, fit_y), batch_size=512))
            scores["react"] = {k: -react(f).double().numpy() for k, (f, _) in rep.items()}
    out = {name: {k: float(auroc(s["id"], s[k])) for k in tests if k != "id"} for name, s in scores.items()}
    print(json.dumps({"auroc": out, "images_through_the_network": seen}))


if __name__ == "__main__":
    main()
