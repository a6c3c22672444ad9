"""Core benchmark (``python scripts/bench_core.py`` → ``results/bench_core.md``): oodbench's one cached pass in one
process against a peer library and against the machine's limit (the product path: ``scripts/bench.py``).

Every figure is measured in this run, on this machine, in this process's thread count:
  (1) pytorch-ood (the closest peer, optional extra ``pip install oodbench[bench]``) in its natural usage — each
      detector's ``fit(loader)`` where it needs one, then ``detector(x)`` per batch of a DataLoader — against
      oodbench (one extraction, then every detector from the cached representations; ODIN runs the network as it
      must) on the same checkpoint and images, interleaved (peer, oodbench, peer, oodbench, …): min / median of
      each and the ratio, with the scores' agreement (AUROC of each detector on both sides);
  (2) perturbation grids: naive vs shared gradient sign (``scripts/bench_grid.py``);
  (3) extraction (features + head) vs a bare ``model(x)`` loop over pre-decoded tensors (the limit here), from
      pre-decoded arrays and from a real image folder decoded in 0 and 2 DataLoader workers;
  (4) growth: the post-forward pipeline (cache write + read, fits, scores of every detector, metrics) on
      synthetic features at several OOD counts, each in a fresh subprocess (its own peak RSS), one ImageNet-shaped
      row (2048-d features, 1000 classes), and the projection to ImageNet scale computed from those rows;
  (5) peak memory of this process.
On a GPU (``--device cuda``) it adds fp32 vs AMP (bf16 autocast) and channels_last throughput.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this checkout's oodbench, not another install

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from oodbench.data.base import ImageSet, protocol_subset
from oodbench.data.cifar import load_cifar
from oodbench.data.lazy import FolderImages
from oodbench.detectors import ODIN
from oodbench.detectors.base import FitData
from oodbench.metrics import auroc, compute_all
from oodbench.models.registry import load_classifier
from oodbench.paths import CONFIG_DIR, REPO_ROOT, resolve
from oodbench.runner.build import build
from oodbench.runner.forward import extract, resolve_device
from oodbench.runner.provenance import git_commit
from oodbench.runner.scoring import ScoringContext, score_set

DETECTORS = ["msp", "energy", "maxlogit", "mahalanobis", "react", "dice", "knn", "vim"]
ASH_P = [60, 65, 70, 75, 80, 85, 90, 95]
COMMON = ["msp", "energy", "maxlogit", "mahalanobis", "react", "odin"]  # what the peer runs (issue 12's list)
ODIN_T, ODIN_EPS = 1000.0, 0.0014  # ODIN's CIFAR-10 setting, both sides
MIB = 2**20


def _node(group: str, name: str) -> DictConfig:
    return OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml")


def _configs() -> list[tuple[str, DictConfig]]:
    """Every post-hoc detector configuration of the table: name and its config node (built by ``build``)."""
    out = [(name, _node("detector", name)) for name in DETECTORS]
    ash = _node("detector", "ash")
    out += [(f"ash_{v}{p}", OmegaConf.merge(ash, {"variant": v, "p": p})) for v in "pbs" for p in ASH_P]
    return out


def _peak_mib() -> float:
    """This process's peak resident set size: ``VmHWM`` (reset by exec, unlike ``ru_maxrss``, which a child
    started by ``subprocess`` inherits from its parent on Linux), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stats(times: list[float]) -> str:
    return f"{min(times):.1f} / {statistics.median(times):.1f}"


# ---------------------------------------------------------------------------------------------------- (1) peer
def _peer_run(model, fit_set: ImageSet, tests: dict[str, ImageSet], device, bs: int) -> tuple[dict, dict]:
    """pytorch-ood, as its docs use it: DataLoaders of (x, y) over the pre-decoded images (the peer's most
    favourable input: float tensors, no decoding), ``fit(loader)``, then ``detector(x)`` per batch; ``no_grad``
    around every detector but ODIN (which needs the input gradient). Returns {detector: seconds}, {detector:
    {set: scores, higher = more in-distribution}}."""
    from pytorch_ood.detector import ODIN as PODIN
    from pytorch_ood.detector import EnergyBased, Mahalanobis, MaxLogit, MaxSoftmax, ReAct
    from torch.utils.data import DataLoader, TensorDataset

    def loader(s: ImageSet) -> DataLoader:
        x = torch.cat(list(s.batches(len(s))))
        y = torch.from_numpy(s.labels).long() if s.labels is not None else torch.zeros(len(s), dtype=torch.long)
        return DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=False)

    fit_loader, loaders = loader(fit_set), {k: loader(s) for k, s in tests.items()}
    make = {
        "msp": lambda: MaxSoftmax(model),
        "energy": lambda: EnergyBased(model),
        "maxlogit": lambda: MaxLogit(model),
        "mahalanobis": lambda: Mahalanobis(model.features),
        "react": lambda: ReAct(backbone=model.features, head=model.head, percentile=0.9),
        "odin": lambda: PODIN(model, eps=ODIN_EPS, temperature=ODIN_T),
    }
    times, scores = {}, {}
    for name in COMMON:
        t = time.perf_counter()
        det = make[name]().to(device)
        with torch.no_grad() if name != "odin" else torch.enable_grad():
            if name in ("mahalanobis", "react"):
                det.fit(fit_loader)
            out = {k: -torch.cat([det(x.to(device)).detach().cpu() for x, _ in ld]).double().numpy()
                   for k, ld in loaders.items()}
        compute_all(out["id"], out["ood"])
        times[name] = time.perf_counter() - t
        scores[name] = out
    return times, scores


def _ours_run(model, fit_set: ImageSet, tests: dict[str, ImageSet], device, bs: int) -> tuple[dict, dict]:
    """oodbench: one extraction over fit + test images, then each detector from the representations (ODIN with
    ε > 0 runs the network, as it must); the same six detectors first, then the rest of the table."""
    times, scores = {}, {}
    t = time.perf_counter()
    reps = {k: extract(model, s, device, bs) for k, s in {"fit": fit_set, **tests}.items()}
    times["pass"] = time.perf_counter() - t
    fit = FitData(reps["fit"].features, torch.from_numpy(fit_set.labels), reps["fit"].logits, model.head,
                  fit_set.describe())
    ctx = ScoringContext(model, device, bs)
    nodes = dict(_configs())
    for name in COMMON + [n for n in nodes if n not in COMMON]:
        t = time.perf_counter()
        det = ODIN(ODIN_T, ODIN_EPS) if name == "odin" else build(nodes[name], f"detector {name}")
        if det.needs_fit:
            det.fit(fit)
        out = {k: score_set(det, reps[k], s, ctx, name) for k, s in tests.items()}
        compute_all(out["id"], out["ood"])
        times[name] = time.perf_counter() - t
        scores[name] = out
    return times, scores


def peer_section(model, device, args, data: Path, cache: Path) -> list[str]:
    try:
        import pytorch_ood
    except ImportError:
        return ["## (1) Measured peer ratio: pytorch-ood", "", "pytorch-ood is not installed, so this run has no peer "
                "ratio: `pip install 'oodbench[bench]'` (pytorch-ood 0.4) and re-run.", ""]
    kw = dict(data_dir=str(data), subset="cifar10/cifar10-exact-subset.npz")
    id_set = protocol_subset(load_cifar("cifar10", **kw), max_images=args.n_id)
    fit_set = protocol_subset(load_cifar("cifar10", split="train", **kw), max_images=args.n_fit)
    ood = protocol_subset(build(_node("ood", args.ood), f"OOD set {args.ood}", data_dir=str(data),
                                cache_dir=str(cache)), max_images=args.n_ood)
    tests = {"id": id_set, "ood": ood}
    peer_t: list[dict] = []
    ours_t: list[dict] = []
    x = next(id_set.batches(args.batch_size)).to(device)
    ODIN(ODIN_T, ODIN_EPS).score_batch(model, x)  # warm-up: forward and backward kernels, before either side
    for r in range(args.repeats):  # interleaved: A, B, A, B, …
        pt, p_scores = _peer_run(model, fit_set, tests, device, args.batch_size)
        peer_t.append(pt)
        print(f"peer run {r + 1}: {sum(pt.values()):.1f} s", flush=True)
        ot, o_scores = _ours_run(model, fit_set, tests, device, args.batch_size)
        ours_t.append(ot)
        print(f"oodbench run {r + 1}: {sum(ot.values()):.1f} s", flush=True)
    peer_tot = [sum(t.values()) for t in peer_t]
    ours_same = [t["pass"] + sum(t[k] for k in COMMON) for t in ours_t]
    ours_all = [sum(t.values()) for t in ours_t]
    n_cfg = len(ours_t[0]) - 1
    rows = []
    for k in COMMON:
        a_peer = auroc(p_scores[k]["id"], p_scores[k]["ood"])
        a_ours = auroc(o_scores[k]["id"], o_scores[k]["ood"])
        rows.append(f"| {k} | {_stats([t[k] for t in peer_t])} | {_stats([t[k] for t in ours_t])} | "
                    f"{100 * a_peer:.2f} | {100 * a_ours:.2f} | {100 * abs(a_peer - a_ours):.2f} |")
    diff = {k: abs(auroc(p_scores[k]["id"], p_scores[k]["ood"]) - auroc(o_scores[k]["id"], o_scores[k]["ood"]))
            for k in COMMON}
    worst, worst_same = max(diff.values()), max(v for k, v in diff.items() if k != "mahalanobis")
    n_img = len(id_set) + len(ood)
    return [
        "## (1) Measured peer ratio: pytorch-ood vs oodbench", "",
        f"pytorch-ood {pytorch_ood.__version__}; images: ID {len(id_set)} (CIFAR-10 test, exact subset) + OOD "
        f"{len(ood)} ({args.ood}) scored, {len(fit_set)} CIFAR-10 train images to fit on; batch {args.batch_size}; "
        f"{args.repeats} interleaved repeats (peer, oodbench, peer, …); times are min / median in seconds.", "",
        "Peer: each detector in its natural usage — `fit(loader)` (Mahalanobis, ReAct), then `detector(x)` per "
        "batch of a DataLoader over the same pre-decoded tensors, `torch.no_grad()` except ODIN. oodbench: one "
        "`extract` over fit + test images, then every detector from the representations; ODIN (T = 1000, "
        "ε = 0.0014) runs the network on both sides.", "",
        "| detector | pytorch-ood (s) | oodbench (s) | AUROC % pytorch-ood | AUROC % oodbench | |Δ| |",
        "|---|---|---|---|---|---|",
        f"| oodbench's one pass ({len(fit_set)} fit + {n_img} test images) | — | "
        f"{_stats([t['pass'] for t in ours_t])} | | | |",
        *rows, "",
        f"- pytorch-ood, the six detectors: {_stats(peer_tot)} s",
        f"- oodbench, the same six (pass included): {_stats(ours_same)} s → ratio **"
        f"{min(peer_tot) / min(ours_same):.2f}×** (min / min; median / median "
        f"{statistics.median(peer_tot) / statistics.median(ours_same):.2f}×)",
        f"- oodbench, the whole post-hoc table ({n_cfg} configurations: the six + DICE, KNN, ViM, 24 ASH) from the "
        f"same pass: {_stats(ours_all)} s → ratio **{min(peer_tot) / min(ours_all):.2f}×** (median / median "
        f"{statistics.median(peer_tot) / statistics.median(ours_all):.2f}×); table / pass = "
        f"{min(ours_all) / min(t['pass'] for t in ours_t):.2f}× (ODIN's own network passes included)",
        f"- score agreement (AUROC, ID vs {args.ood}): largest difference {100 * worst:.2f} points over the six "
        f"detectors, {100 * worst_same:.2f} over those with identical definitions (all but Mahalanobis: pytorch-ood "
        "inverts the unnormalised scatter matrix + 1e-6·I, oodbench pseudo-inverts the covariance as Lee et al.'s code "
        f"does — with {len(fit_set)} fit images for 342-d features the two differ) — "
        f"{'within' if worst_same <= 0.01 else 'NOT within'} 1 point", ""]


# ------------------------------------------------------------------------------------------ (3) extraction
def _isun_folder(data: Path, n: int, root: Path) -> list[Path]:
    """The first ``n`` real iSUN JPEGs of the published archive, written out as an image folder."""
    out = []
    with tarfile.open(data / "ood" / "iSUN.tar.gz", "r:gz") as tar:
        for m in tar:
            if m.isfile() and m.name.lower().endswith(".jpeg"):
                out.append(root / f"{len(out):05d}.jpeg")
                out[-1].write_bytes(tar.extractfile(m).read())
                if len(out) == n:
                    break
    return out


def extraction_section(model, device, args, data: Path) -> list[str]:
    kw = dict(data_dir=str(data), subset="cifar10/cifar10-exact-subset.npz")
    arrays = protocol_subset(load_cifar("cifar10", **kw), max_images=args.n_extract)
    tensors = list(arrays.batches(args.batch_size))
    with tempfile.TemporaryDirectory() as tmp:
        files = _isun_folder(data, args.n_extract, Path(tmp))
        images = FolderImages(files, size=32, resize=32)
        folder = ImageSet("isun_folder", images, None, "image folder", len(images), np.arange(len(images)), "bench")
        runs: dict[str, Callable[[], object]] = {
            "bare `model(x)`, pre-decoded tensors": lambda: [model(x.to(device)) for x in tensors],
            "extract, pre-decoded arrays": lambda: extract(model, arrays, device, args.batch_size, 0),
            "extract, image folder, 0 workers": lambda: extract(model, folder, device, args.batch_size, 0),
            "extract, image folder, 2 workers": lambda: extract(model, folder, device, args.batch_size, 2),
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        with torch.no_grad():
            model(tensors[0].to(device))  # warm-up
            for _ in range(args.repeats):  # interleaved
                for k, fn in runs.items():
                    t = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t)
    bare = min(times[next(iter(runs))])
    rows = [f"| {k} | {args.n_extract / min(v):.1f} | {_stats(v)} | {bare / min(v):.2f}× |" for k, v in times.items()]
    return ["## (3) Extraction vs the bare forward loop", "",
            f"{args.n_extract} images (CIFAR-10 test for the arrays, the first {args.n_extract} iSUN JPEGs of the "
            f"published archive written to a temporary folder for the folder rows), batch {args.batch_size}, "
            f"{args.repeats} interleaved repeats. Ratio = bare time / this time (goal ≥ 0.9×).", "",
            "| path | img/s (best) | s min / median | ratio to bare |", "|---|---|---|---|", *rows, ""]


# ---------------------------------------------------------------------------------------------- (4) growth
def _growth_worker(spec: dict) -> dict:
    """In a fresh process: synthetic representations through cache write + read, fits, every detector's scores
    and the metrics; times per phase and this process's peak RSS."""
    from torch import nn

    from oodbench.runner.cache import RepresentationCache
    from oodbench.runner.forward import Representations

    base = _peak_mib()
    n_ood, n_id, n_fit, dim, classes = (spec[k] for k in ("n_ood", "n_id", "n_fit", "dim", "classes"))
    torch.manual_seed(0)
    head = nn.Linear(dim, classes)
    centers = torch.randn(classes, dim)

    def synth(n: int, shift: float) -> tuple[Representations, torch.Tensor]:
        labels = torch.arange(n) % classes
        feats = torch.cat([(centers[labels[s:s + 8192]] + shift + torch.randn(min(8192, n - s), dim)).relu_()
                           for s in range(0, n, 8192)])
        with torch.no_grad():
            return Representations(head(feats), feats), labels

    sets = {"fit": synth(n_fit, 0.0), "id": synth(n_id, 0.0), "ood": synth(n_ood, 0.5)}
    t: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        reps = {}
        for k, (r, _) in sets.items():
            t0 = time.perf_counter()
            RepresentationCache(Path(tmp)).get_or_compute(k, lambda r=r: r, k)  # miss: write
            reps[k] = RepresentationCache(Path(tmp)).get_or_compute(k, lambda: None, k)  # hit: read back
            t[f"cache_{k}"] = time.perf_counter() - t0
    fit = FitData(reps["fit"].features, sets["fit"][1], reps["fit"].logits, head, "synthetic")
    t["fit"] = t["score_id"] = t["score_ood"] = 0.0
    for name in DETECTORS:
        det = build(_node("detector", name), f"detector {name}")
        t0 = time.perf_counter()
        if det.needs_fit:
            det.fit(fit)
        t1 = time.perf_counter()
        with torch.no_grad():
            ids = det.score_features(reps["id"].features, head) if det.consumes == "features" \
                else det.score_logits(reps["id"].logits)
        t2 = time.perf_counter()
        with torch.no_grad():
            oods = det.score_features(reps["ood"].features, head) if det.consumes == "features" \
                else det.score_logits(reps["ood"].logits)
        compute_all(ids.double().numpy(), oods.double().numpy())
        t["fit"] += t1 - t0
        t["score_id"] += t2 - t1
        t["score_ood"] += time.perf_counter() - t2
    return {**spec, **t, "rss_base": base, "rss_peak": _peak_mib()}


def _run_growth(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--growth-worker", json.dumps(spec)], capture_output=True,
                         text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"growth worker {spec} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _resnet50_rate(n: int) -> float:
    """This machine's fp32 ResNet-50 (224 px, random weights) forward rate on ``n`` images, best of two."""
    import torchvision

    net = torchvision.models.resnet50().eval()
    x = torch.rand(n, 3, 224, 224)
    with torch.no_grad():
        net(x[:1])
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            net(x)
            best = min(best, time.perf_counter() - t)
    return n / best


def growth_section(args) -> list[str]:
    counts = [int(c) for c in args.growth.split(",") if c]
    specs = [dict(n_ood=n, n_id=args.growth_id, n_fit=args.growth_fit, dim=342, classes=10) for n in counts]
    if args.growth_imagenet:
        specs.append(dict(n_ood=args.growth_imagenet, n_id=args.growth_id, n_fit=max(args.growth_fit, 2000),
                          dim=2048, classes=1000))  # ≥ 2 per class: a class covariance needs within-class spread
    rows, res = [], []
    for spec in specs:
        r = _run_growth(spec)
        res.append(r)
        ood_t = r["cache_ood"] + r["score_ood"]
        total = sum(r[k] for k in ("cache_fit", "cache_id", "cache_ood", "fit", "score_id", "score_ood"))
        rows.append(f"| {r['n_ood']} | {r['dim']} × {r['classes']} | {r['cache_ood']:.2f} | {r['score_ood']:.2f} | "
                    f"{1e6 * ood_t / r['n_ood']:.0f} | {r['cache_id'] + r['cache_fit'] + r['fit'] + r['score_id']:.2f}"
                    f" | {total:.1f} | {r['rss_base']:.0f} | {r['rss_peak']:.0f} |")
        print(rows[-1], flush=True)
    lines = ["## (4) Growth: the post-forward pipeline on synthetic representations", "",
             f"Each row a fresh subprocess: ID {args.growth_id} + fit {args.growth_fit} + the stated OOD count of "
             "synthetic features (and logits from a linear head) → representation-cache write + read (npz, as the "
             f"runner does) → fit of {', '.join(DETECTORS)} → scores of the ID and OOD sets → all metrics. "
             "`per OOD image` = (OOD cache write/read + OOD scoring and metrics) / OOD count; peak RSS is the "
             "process's `VmHWM`, `after import` its value once torch and oodbench are imported. The ID, fit "
             "and OOD sets are held in memory together, as in a run.", "",
             "| OOD images | features × classes | OOD cache (s) | OOD scores + metrics (s) | per OOD image (µs) "
             "| fixed: ID + fit cache, fits, ID scores (s) | total (s) | RSS after import (MiB) | peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|---|---|", *rows, ""]
    small = [r for r in res if r["dim"] == 342]
    if len(small) >= 2:
        a, b = small[0], small[-1]
        slope = (b["rss_peak"] - a["rss_peak"]) * MIB / (b["n_ood"] - a["n_ood"])
        raw = 4 * (342 + 10)
        lines += [f"- memory: peak RSS grows by {slope / 1024:.1f} KiB per OOD image between {a['n_ood']} and "
                  f"{b['n_ood']} images, against {raw / 1024:.2f} KiB of float32 features + logits per image "
                  f"({slope / raw:.1f}× the raw bytes): every set's representations are held in memory whole "
                  "(extraction concatenates the batches, the cache writes one npz per set, detectors score the "
                  "whole array); nothing is streamed to disk batch by batch. Metrics are sort-based "
                  "(O(n log n) time, O(n) memory): no ID × OOD pairs are materialised.", ""]
    big = [r for r in res if r["dim"] == 2048]
    if big:
        r = big[0]
        rate50 = _resnet50_rate(args.resnet_images)
        n_total, per_img = 50_000 + 4 * 10_000, 4 * (2048 + 1000)
        raw = n_total * per_img
        mult = max(1.0, (r["rss_peak"] - r["rss_base"]) * MIB / ((r["n_ood"] + r["n_id"] + r["n_fit"]) * per_img))
        proj_mem = r["rss_base"] * MIB + mult * raw
        post = (r["cache_ood"] + r["score_ood"]) / r["n_ood"] * n_total
        lines += [
            "### Projection to ImageNet scale (50,000 ID + 4 × 10,000 OOD, 2048-d features, 1000 classes)", "",
            f"- stored representations: 90,000 × (2048 + 1000) × 4 B = {raw / 2**30:.2f} GiB (float32 features + "
            "logits; the pixels are decoded per batch by `FolderImages`, never held)",
            f"- memory: the measured ImageNet-shaped row used {mult:.1f}× its raw representation bytes above the "
            f"import baseline; {r['rss_base']:.0f} MiB + {mult:.1f} × {raw / 2**30:.2f} GiB = "
            f"**{proj_mem / 2**30:.1f} GiB** peak with all 90,000 images' representations in memory at once "
            f"(the worst case; the multiplier is the measured row's, transient float64 copies of ViM / "
            f"Mahalanobis included): {'fits' if proj_mem < 24 * 2**30 else 'does NOT fit'} in 24 GiB",
            f"- the fits (Mahalanobis, ViM: eigendecompositions of 2048 × 2048 in float64) took "
            f"{r['fit']:.0f} s on {r['n_fit']} fit features in that row; they do not grow with the test images",
            f"- post-forward time: {1e6 * (r['cache_ood'] + r['score_ood']) / r['n_ood']:.0f} µs per image "
            f"(measured, 2048-d row) × 90,000 = {post:.0f} s on this CPU",
            f"- forward: ResNet-50 (224 px, fp32) measured here at {rate50:.1f} img/s on {args.resnet_images} images "
            f"→ 90,000 images = {n_total / rate50 / 3600:.1f} h on this CPU. On a GPU the forward takes "
            "90,000 / R s for a ResNet-50 rate of R img/s (not measured in this run; at a stated R = 1,000 img/s, "
            "90 s), and decoding 224-px JPEGs must keep up with R: that is what the DataLoader workers of (3) "
            "are for (`num_workers=auto` gives image folders up to 4). The post-forward part does not depend on the "
            "network.", ""]
    return lines


# ----------------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="dice_densenet_cifar10")
    ap.add_argument("--ood", default="isun", help="OOD set of the peer comparison")
    ap.add_argument("--n-id", type=int, default=200, help="(1) ID test images")
    ap.add_argument("--n-ood", type=int, default=200, help="(1) OOD test images")
    ap.add_argument("--n-fit", type=int, default=400, help="(1) ID train images to fit on")
    ap.add_argument("--repeats", type=int, default=2, help="(1), (3) interleaved repeats")
    ap.add_argument("--grid-n", type=int, default=8, help="(2) images of the perturbation grids (0: skip)")
    ap.add_argument("--grid-fit", type=int, default=500, help="(2) train images for the Mahalanobis fit")
    ap.add_argument("--n-extract", type=int, default=384, help="(3) images of the extraction rows")
    ap.add_argument("--growth", default="1000,10000,50000", help="(4) OOD counts (empty: skip)")
    ap.add_argument("--growth-id", type=int, default=10000)
    ap.add_argument("--growth-fit", type=int, default=5000)
    ap.add_argument("--growth-imagenet", type=int, default=10000, help="(4) OOD count of the 2048-d row (0: skip)")
    ap.add_argument("--resnet-images", type=int, default=8, help="(4) images for the ResNet-50 rate")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench_core.md")
    ap.add_argument("--growth-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.growth_worker:
        print(json.dumps(_growth_worker(json.loads(args.growth_worker))))
        return
    t_start = time.perf_counter()
    device = resolve_device(args.device)
    data, cache = resolve("data"), resolve("cache")
    model, prov = load_classifier(args.checkpoint, resolve("weights"))
    model = model.to(device).eval()
    cmd = " ".join(["python scripts/bench.py", *sys.argv[1:]])
    lines = [f"# oodbench benchmark — {device.type}", "",
             f"Command: `{cmd}` (git {git_commit()[:12]}, torch {torch.__version__}, {torch.get_num_threads()} "
             f"threads, checkpoint `{prov['name']}`). Every number below was measured in this run; nothing is "
             "estimated except the ImageNet projection of (4), whose arithmetic is shown.", ""]

    def section(name: str, fn: Callable[[], list[str]]) -> None:
        t = time.perf_counter()
        part = fn()
        lines.extend(part)
        print("\n".join(part), flush=True)
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", flush=True)

    section("peer", lambda: peer_section(model, device, args, data, cache))
    if args.grid_n:
        def grid() -> list[str]:
            from bench_grid import EXPLAIN, TABLE_HEAD, measure

            rows, ckpt = measure(args.grid_n, args.repeats, args.grid_fit)
            return ["## (2) Perturbation grids: naive vs shared gradient sign", "",
                    f"{ckpt}, {args.grid_n} CIFAR-10 test images (Mahalanobis fitted on {args.grid_fit} train "
                    f"images), best of {args.repeats} alternating runs; the Mahalanobis row is its Table 2 "
                    "validation grid.", "", *TABLE_HEAD, *rows, "", EXPLAIN, ""]
        section("grid", grid)
    section("extraction", lambda: extraction_section(model, device, args, data))
    if args.growth or args.growth_imagenet:
        section("growth", lambda: growth_section(args))
    mem = ["## (5) Peak memory of this process", "", f"- peak resident set size: {_peak_mib():.0f} MiB"]
    if device.type == "cuda":
        mem.append(f"- peak CUDA memory: {torch.cuda.max_memory_allocated() / MIB:.0f} MiB")
        kw = dict(data_dir=str(data), subset="cifar10/cifar10-exact-subset.npz")
        isun = build(_node("ood", "isun"), "OOD set isun", data_dir=str(data), cache_dir=str(cache))
        mem += ["", *_gpu_figures(model, load_cifar("cifar10", **kw), isun, device, args.batch_size)]
    else:
        mem += ["", "GPU figures (fp32 vs bf16 autocast, channels_last, AMP scores vs fp32) are not in this run: "
                "`python scripts/bench.py --device cuda` on a GPU machine adds them."]
    mem += ["", f"Whole run: {time.perf_counter() - t_start:.0f} s."]
    lines += mem
    print("\n".join(mem))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def _gpu_figures(model, id_set, ood_set, device, bs) -> list[str]:
    """fp32 vs AMP (bf16) vs channels_last throughput; AMP energy scores checked against fp32."""

    def energy_scores(m, data, amp: bool, cl: bool) -> tuple[float, np.ndarray]:
        fmt = torch.channels_last if cl else torch.contiguous_format
        m = m.to(memory_format=fmt)
        out = []
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            m(next(iter(data.batches(bs))).to(device, memory_format=fmt))
            torch.cuda.synchronize()
            t = time.perf_counter()
            for x in data.batches(bs):
                out.append(torch.logsumexp(m(x.to(device, memory_format=fmt)).float(), 1).cpu())
            torch.cuda.synchronize()
        return len(data) / (time.perf_counter() - t), torch.cat(out).numpy()

    rows, ref = [], {}
    for amp, cl in [(False, False), (True, False), (False, True), (True, True)]:
        rate_id, s_id = energy_scores(model, id_set, amp, cl)
        _, s_ood = energy_scores(model, ood_set, amp, cl)
        if not ref:
            ref = {"id": s_id, "ood": s_ood}
        diff = max(np.abs(s_id - ref["id"]).max(), np.abs(s_ood - ref["ood"]).max())
        rows.append(f"| {'bf16 autocast' if amp else 'fp32'} | {'channels_last' if cl else 'NCHW'} | {rate_id:.0f} "
                    f"| {100 * auroc(s_id, s_ood):.3f} | {diff:.2e} |")
    return ["## GPU: precision and memory format (energy score, ID vs iSUN)", "",
            "| precision | layout | img/s | AUROC % | max abs score diff vs fp32 |", "|---|---|---|---|---|", *rows]


if __name__ == "__main__":
    main()
