"""Benchmark of the product path (``make bench`` → ``results/bench.md`` + ``results/bench.csv``).

Every figure is measured in this run on this machine; each side runs as its own process from an empty cache, process
start, imports and decoding included, and the sides are interleaved round by round (A, B, C, D, A, B, ...), so a
busy minute slows every side alike; min and median over the rounds.

1. **Product path vs the peer** at a realistic size — ID 1,017 (every exact CIFAR-10 test image) + iSUN and LSUN-resize
   (1,000 each, the default protocol), fit on the 5,085-image exact training subset, 8 detectors (MSP, Energy,
   MaxLogit, Mahalanobis, KNN, ViM, ReAct, DICE) on DICE's CIFAR-10 DenseNet-BC-100: oodbench as ``run.py -m`` and
   as the Python API; pytorch-ood 0.4 as its users write it (``scripts/bench_peer.py --mode natural``: the network
   per detector) and as a careful user shares one pass (``--mode careful``; once more with oodbench's heap setting
   through glibc's environment). The forward-count ceiling is the ratio of images the two sides push through the
   network.
2. **ODIN** (T = 1000, ε = 0.0014) separately: it needs the network on both sides.
3. **The whole post-hoc table** (every detector config of the post-hoc page but ODIN) from one pass (the API) against a
   pass per configuration (the same library in one process, the network re-run for each configuration's images).
4. **Fixed costs**: a warm served run (CPU-s of the whole process), the marginal CPU-s of a multirun cell beyond its
   own scoring, what an empty cache decodes, ``make tables`` for every page and its growth with the rows (×1, ×10
   synthetic), and ``python -X importtime``: which heavy packages a command imports.
5. **The forward itself**: ``no_grad`` with glibc's heap pooled (today's path) against the system heap,
   ``inference_mode``, channels-last and TorchScript freezing for DenseNet-BC-100 (32 px) and ResNet-50 (224 px,
   random weights): images/s and the largest change of a logit.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's oodbench

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from oodbench.heap import POOLED_TRIM_THRESHOLD  # noqa: E402
from oodbench.paths import REPO_ROOT, resolve  # noqa: E402

PY = sys.executable
EIGHT = ["msp", "energy", "maxlogit", "mahalanobis", "knn", "vim", "react", "dice"]
FITS = {"mahalanobis", "knn", "vim", "react", "dice"}
ROWS: list[dict[str, Any]] = []  # everything measured, written to bench.csv


def record(section: str, name: str, **values: Any) -> dict[str, Any]:
    row = {"section": section, "name": name, **values}
    ROWS.append(row)
    return row


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = REPO_ROOT,
          timeout: int = 7200) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s of the child and its children, the finished process) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})},
                          timeout=timeout)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{proc.stderr[-3000:]}")
    return wall, cpu, proc


def stats(xs: list[float]) -> str:
    return f"{min(xs):.1f} / {statistics.median(xs):.1f}"


# ------------------------------------------------------------------------------------------- (1) product path
def _ours_cli(args: argparse.Namespace, tmp: Path) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        cache, sweep = Path(tempfile.mkdtemp(dir=tmp)), Path(tempfile.mkdtemp(dir=tmp))
        cmd = [PY, "run.py", "-m", f"detector={','.join(EIGHT)}", "arch.weights=dice",
               f"ood=[{args.sets}]", f"protocol.max_ood={args.n_ood}", f"hydra.sweep.dir={sweep}"]
        wall, cpu, _ = timed(cmd, {"OODBENCH_CACHE": str(cache)})
        with open(sweep / "summary.csv") as f:
            rows = list(csv.DictReader(f))
        auroc = {(r["detector"], r["ood_dataset"]): float(r["auroc"]) for r in rows if r["status"] == "ok"}
        shutil.rmtree(cache, ignore_errors=True)
        return {"wall": wall, "cpu": cpu, "auroc": auroc}
    return run


def _ours_api(args: argparse.Namespace, tmp: Path) -> Callable[[], dict[str, Any]]:
    code = ("import json, oodbench\n"
            f"r = oodbench.evaluate('dice_densenet_cifar10', id='cifar10', detectors={EIGHT!r}, "
            f"ood={args.sets.split(',')!r}, max_ood={args.n_ood})\n"
            "print(json.dumps({f'{d}|{o}': a for d, o, a in zip(r.frame.detector, r.frame.ood_dataset, "
            "r.frame.auroc)}))")

    def run() -> dict[str, Any]:
        cache = Path(tempfile.mkdtemp(dir=tmp))
        wall, cpu, proc = timed([PY, "-c", code], {"OODBENCH_CACHE": str(cache)})
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        shutil.rmtree(cache, ignore_errors=True)
        return {"wall": wall, "cpu": cpu, "auroc": {tuple(k.split("|")): v for k, v in out.items()}}
    return run


# oodbench.heap's setting for a whole process, through glibc's environment (what a pytorch-ood user can set)
POOLED_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(POOLED_TRIM_THRESHOLD)}


def _peer(args: argparse.Namespace, tmp: Path, mode: str, env: dict[str, str] | None = None
          ) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        cache = Path(tempfile.mkdtemp(dir=tmp))
        cmd = [PY, "scripts/bench_peer.py", "--mode", mode, "--sets", args.sets, "--n-ood", str(args.n_ood)]
        wall, cpu, proc = timed(cmd, {"OODBENCH_CACHE": str(cache), **(env or {})})
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        shutil.rmtree(cache, ignore_errors=True)
        return {"wall": wall, "cpu": cpu, "images": out["images_through_the_network"],
                "auroc": {(d, o): a for d, per in out["auroc"].items() for o, a in per.items()}}
    return run


def product_section(args: argparse.Namespace, tmp: Path) -> list[str]:
    n_id, n_fit, n_sets = 1017, 5085, len(args.sets.split(","))
    test = n_id + n_sets * args.n_ood
    ours_images = n_fit + test
    peer_images = len(EIGHT) * test + len(FITS) * n_fit
    ceiling = peer_images / ours_images
    sides = {"oodbench run.py -m": _ours_cli(args, tmp), "oodbench API": _ours_api(args, tmp),
             "pytorch-ood, natural": _peer(args, tmp, "natural"),
             "pytorch-ood, one shared pass": _peer(args, tmp, "careful"),
             "pytorch-ood, one shared pass, pooled heap": _peer(args, tmp, "careful", POOLED_ENV)}
    got: dict[str, list[dict[str, Any]]] = {k: [] for k in sides}
    for r in range(args.heavy_rounds):
        for name, fn in sides.items():
            res = fn()
            got[name].append(res)
            record("product", name, round=r, wall_s=round(res["wall"], 2), cpu_s=round(res["cpu"], 2))
            print(f"round {r + 1} {name}: {res['wall']:.1f} s wall, {res['cpu']:.1f} CPU-s", flush=True)
    wall = {k: [x["wall"] for x in v] for k, v in got.items()}
    cpu = {k: [x["cpu"] for x in v] for k, v in got.items()}
    peer = "pytorch-ood, natural"
    lines = ["## 1. Product path vs pytorch-ood at a realistic size", "",
             f"ID {n_id} CIFAR-10 test images (every exact-subset image) + {', '.join(args.sets.split(','))} "
             f"({args.n_ood} each, the default protocol's seeded subsample), fit on the {n_fit}-image exact training "
             f"subset; 8 detectors ({', '.join(EIGHT)}) on `dice_densenet_cifar10`; each side a fresh process from an "
             f"empty cache; {args.heavy_rounds} interleaved rounds; seconds min / median.", "",
             f"Images through the network: oodbench {ours_images} (one pass per set), pytorch-ood as written "
             f"{peer_images} (every detector its own pass over the {test} test images, the five that fit one more "
             f"over the {n_fit} fit images) → **forward-count ceiling {ceiling:.2f}×**.", "",
             "| side | wall s | CPU s | ratio to pytorch-ood natural (wall, min/min) | share of the ceiling |",
             "|---|---|---|---|---|"]
    for k in sides:
        ratio = min(wall[peer]) / min(wall[k])
        share = f"{ratio / ceiling:.2f}" if k.startswith("oodbench") else ""
        lines.append(f"| {k} | {stats(wall[k])} | {stats(cpu[k])} | {ratio:.2f}× | {share} |")
        record("product_summary", k, wall_min=round(min(wall[k]), 2), wall_median=round(statistics.median(wall[k]), 2),
               cpu_min=round(min(cpu[k]), 2), ratio=round(ratio, 3), ceiling=round(ceiling, 3))
    diff = {}
    heap = "pytorch-ood, one shared pass, pooled heap"
    for k in ("oodbench API", "pytorch-ood, natural", "pytorch-ood, one shared pass", heap):
        a, b = got["oodbench run.py -m"][0]["auroc"], got[k][0]["auroc"]
        diff[k] = {key: abs(a[key] - b[key]) for key in a if key in b}
    same = {key: v for key, v in diff["pytorch-ood, natural"].items() if key[0] not in ("mahalanobis", "dice")}
    lines += ["", "- Above the ceiling: oodbench runs each CPU pass with glibc's heap pooled (`oodbench/heap.py`, "
              "bit-identical scores; section 5), which pytorch-ood does not. The last row gives the careful peer the "
              f"same allocator through glibc's environment ({', '.join(f'{k}={v}' for k, v in POOLED_ENV.items())}): "
              f"it takes {min(wall[heap]) / min(wall['oodbench API']):.2f}× the wall time of oodbench's API, with the "
              "allocator and the forward count equal.",
              f"- oodbench's two entry points give the same numbers: largest AUROC difference "
              f"{100 * max(diff['oodbench API'].values()):.4f} points over {len(diff['oodbench API'])} cells.",
              f"- against pytorch-ood (natural), AUROC differs by at most {100 * max(same.values()):.2f} points on the "
              f"{len(same)} cells of the detectors both define alike; Mahalanobis (pytorch-ood adds 1e-6·I to the "
              "scatter matrix; oodbench pseudo-inverts the covariance as Lee et al.'s code) and DICE (oodbench uses "
              "the authors' published mean feature of this checkpoint, pytorch-ood fits it on the fit images) differ "
              "by definition: largest "
              f"{100 * max(v for key, v in diff['pytorch-ood, natural'].items() if key[0] == 'mahalanobis'):.2f} and "
              f"{100 * max(v for key, v in diff['pytorch-ood, natural'].items() if key[0] == 'dice'):.2f} points.", ""]
    for key, v in diff["pytorch-ood, natural"].items():
        record("agreement", f"{key[0]}|{key[1]}", auroc_diff=round(v, 6))
    return lines


# ------------------------------------------------------------------------------------------- (2) ODIN
def odin_section(args: argparse.Namespace, tmp: Path) -> list[str]:
    code_ours = ("import json, oodbench\nr = oodbench.evaluate('dice_densenet_cifar10', detectors=[('odin', "
                 f"{{'epsilon': 0.0014}})], ood=['isun'], max_id={args.odin_n}, max_ood={args.odin_n}, bootstrap=0)\n"
                 "print(json.dumps(float(r.frame.auroc.iloc[0])))")
    code_peer = f"""
import json, sys, torch
sys.path.insert(0, {str(REPO_ROOT)!r})
from pytorch_ood.detector import ODIN
from oodbench.api import _builtin
from oodbench.data.base import protocol_subset
from oodbench.metrics import auroc
from oodbench.models.registry import load_classifier
m, _ = load_classifier('dice_densenet_cifar10'); m.eval()
sets = [protocol_subset(_builtin('id', 'cifar10', 'cifar10'), max_images={args.odin_n}),
        protocol_subset(_builtin('ood', 'isun', 'cifar10'), max_images={args.odin_n})]
det = ODIN(m, eps=0.0014, temperature=1000.0)
s = [-torch.cat([det(x).detach() for x in d.batches(128)]).double().numpy() for d in sets]
print(json.dumps(float(auroc(s[0], s[1]))))
"""
    got: dict[str, list[tuple[float, float, float]]] = {"oodbench API": [], "pytorch-ood": []}
    for r in range(args.rounds):
        for name, code in (("oodbench API", code_ours), ("pytorch-ood", code_peer)):
            cache = Path(tempfile.mkdtemp(dir=tmp))
            wall, cpu, proc = timed([PY, "-c", code], {"OODBENCH_CACHE": str(cache)})
            got[name].append((wall, cpu, json.loads(proc.stdout.strip().splitlines()[-1])))
            record("odin", name, round=r, wall_s=round(wall, 2), cpu_s=round(cpu, 2))
            print(f"round {r + 1} ODIN {name}: {wall:.1f} s", flush=True)
    w = {k: [x[0] for x in v] for k, v in got.items()}
    return ["## 2. ODIN (T = 1000, ε = 0.0014): the network on both sides", "",
            f"{args.odin_n} CIFAR-10 test + {args.odin_n} iSUN images, one process each from an empty cache, "
            f"{args.rounds} interleaved rounds.", "",
            "| side | wall s (min / median) | AUROC % |", "|---|---|---|",
            *(f"| {k} | {stats(v)} | {100 * got[k][0][2]:.3f} |" for k, v in w.items()), "",
            f"- ratio {min(w['pytorch-ood']) / min(w['oodbench API']):.2f}× (min / min): both run a forward, a "
            "backward and a second forward per image; no cache can serve an input perturbation.", ""]


# ------------------------------------------------------------------------------------------- (3) whole table
def _table_configs() -> list[str]:
    """Every detector config of the post-hoc page but ODIN (which needs the network on both sides) and the ones
    that cannot fit on ID-train here."""
    from oodbench.tables.engine import load_spec

    block = next(b for b in load_spec("posthoc_cifar")["blocks"] if b["kind"] == "grid")
    dets = block["detectors"]
    return [d for d in (dets if isinstance(dets, list) else list(dets)) if d not in ("odin", "temp_scaling")]


def table_section(args: argparse.Namespace, tmp: Path) -> list[str]:
    configs = _table_configs()
    common = (f"id='cifar10', ood={args.table_sets.split(',')!r}, max_id={args.table_n}, max_ood={args.table_n}, "
              f"max_fit={args.table_fit}, bootstrap=0")
    one_pass = ("import json, oodbench\n"
                f"r = oodbench.evaluate('dice_densenet_cifar10', detectors={configs!r}, {common})\n"
                "print(json.dumps(len(r.frame)))")
    per_config = ("import json, oodbench\nn = 0\n"
                  f"for d in {configs!r}:\n"
                  f"    r = oodbench.evaluate('dice_densenet_cifar10', detectors=[d], cache=False, {common})\n"
                  "    n += len(r.frame)\nprint(json.dumps(n))")
    n_sets = len(args.table_sets.split(","))
    test, fit = args.table_n * (1 + n_sets), args.table_fit
    from oodbench.conf import group_node
    from oodbench.runner.build import build

    n_fit = 0
    for d in configs:
        from omegaconf import OmegaConf

        det = build(OmegaConf.create({"id": {"name": "cifar10"}, "d": group_node("detector", d)}).d, d, "detector")
        n_fit += bool(det.needs_fit) or d == "dice"  # DICE's published mean: no fit, but ours stays conservative
    ceiling = (len(configs) * test + n_fit * fit) / (test + fit)
    got: dict[str, list[float]] = {"one pass (oodbench API)": [], "a pass per configuration": []}
    for r in range(args.heavy_rounds):
        for name, code in (("one pass (oodbench API)", one_pass), ("a pass per configuration", per_config)):
            cache = Path(tempfile.mkdtemp(dir=tmp))
            wall, cpu, _ = timed([PY, "-c", code], {"OODBENCH_CACHE": str(cache)})
            got[name].append(wall)
            record("table", name, round=r, wall_s=round(wall, 2), cpu_s=round(cpu, 2))
            print(f"round {r + 1} table {name}: {wall:.1f} s", flush=True)
    ratio = min(got["a pass per configuration"]) / min(got["one pass (oodbench API)"])
    record("table_summary", "ratio", ratio=round(ratio, 3), ceiling=round(ceiling, 3), configs=len(configs))
    return ["## 3. The whole post-hoc table: one pass vs a pass per configuration", "",
            f"{len(configs)} detector configurations of the post-hoc page ({', '.join(configs)}; ODIN is left out: it "
            f"runs the network on either side); {args.table_n} ID + {args.table_n} images of each of "
            f"{args.table_sets} scored, {fit} fit images; `dice_densenet_cifar10`; each side one process from an "
            f"empty cache; {args.heavy_rounds} interleaved rounds. Forward-count ceiling {ceiling:.1f}× ({n_fit} "
            "configurations counted as fitting).", "",
            "| side | wall s (min / median) |", "|---|---|", *(f"| {k} | {stats(v)} |" for k, v in got.items()), "",
            f"- **{ratio:.1f}×** (min / min), {ratio / ceiling:.2f} of the ceiling.", ""]


# ------------------------------------------------------------------------------------------- (4) fixed costs
def fixed_section(args: argparse.Namespace, tmp: Path) -> list[str]:
    lines = ["## 4. Fixed costs", ""]
    cache, results = tmp / "fixed-cache", tmp / "fixed-results"
    env = {"OODBENCH_CACHE": str(cache), "OODBENCH_RESULTS": str(results)}
    base = [PY, "run.py", "detector=energy", "id=cifar10", "result_set=bench", "ood=[isun,lsun_resize,gaussian]"]
    wall, cpu, _ = timed([*base, f"hydra.run.dir={tmp / 'fx0'}"], env)
    record("fixed", "first run (computes)", wall_s=round(wall, 2), cpu_s=round(cpu, 2))
    served = []
    for r in range(args.rounds):
        wall, cpu, proc = timed([*base, f"hydra.run.dir={tmp / f'fx{r + 1}'}"], env)
        assert "nothing recomputed" in proc.stdout, proc.stdout[-500:]
        served.append(cpu)
        record("fixed", "warm served run", round=r, wall_s=round(wall, 2), cpu_s=round(cpu, 2))
    decoded = sorted(p.name for p in (cache / "prepared").glob("*.npy"))
    import numpy as np

    sizes = {p: len(np.load(cache / "prepared" / p, mmap_mode="r")) for p in decoded}
    lines += [f"- warm served run (`python run.py detector=energy id=cifar10` on three sets, its row stored): "
              f"**{min(served):.2f} CPU-s** (min of {args.rounds}; median {statistics.median(served):.2f}), the whole "
              "process: interpreter, imports, Hydra, the store check; no model is loaded and no image decoded.",
              "- what the first run decoded from an empty cache: "
              + "; ".join(f"`{k}`: {v} images" for k, v in sizes.items())
              + " (the scored subsample of each archive, not the archive: iSUN holds 8,925 images, LSUN 10,000).", ""]
    for k, v in sizes.items():
        record("fixed", f"decoded {k}", images=v)
    # multirun cells beyond their own scoring: a 1-cell and a 9-cell sweep of logit detectors on cached representations
    cells = ["msp", "energy", "maxlogit", "entropy", "gen", "klm", "msp", "energy", "maxlogit"][: args.cells]
    sweep_cpu = {}
    for n in (1, len(cells)):
        dets = ",".join(f"{d}" for d in cells[:n])
        extra = [f"detector.temperature={1 + i}" if d == "energy" else "" for i, d in enumerate(cells[:n])]
        del extra
        cmd = [PY, "run.py", "-m", f"detector={dets}", "ood=[isun,lsun_resize,gaussian]", "protocol.bootstrap=0",
               "rerun=true", f"hydra.sweep.dir={tmp / f'sw{n}'}"]
        timed(cmd, env)  # warm the representation cache
        cpus = [timed(cmd, env)[1] for _ in range(args.rounds)]
        sweep_cpu[n] = min(cpus)
        record("fixed", f"sweep of {n} cells (cached representations, bootstrap 0)", cpu_s=round(min(cpus), 2))
    import pandas as pd

    own = [float(pd.read_csv(f)["run_cpu_seconds"].iloc[0])
           for f in sorted((tmp / f"sw{len(cells)}").glob("*/metrics.csv"))]  # the last round's cells
    per_cell = (sweep_cpu[len(cells)] - sweep_cpu[1]) / (len(cells) - 1)
    own_cell = statistics.mean(own)
    record("fixed", "marginal CPU-s per multirun cell", cpu_s=round(per_cell, 3))
    record("fixed", "own scoring CPU-s per cell", cpu_s=round(own_cell, 3), cells=len(own))
    record("fixed", "CPU-s per multirun cell beyond its own scoring", cpu_s=round(per_cell - own_cell, 3))
    lines += [f"- a multirun cell: a sweep of {len(cells)} logit-detector cells on cached representations took "
              f"{sweep_cpu[len(cells)]:.2f} CPU-s, a sweep of 1 cell {sweep_cpu[1]:.2f}: {per_cell:.2f} CPU-s per "
              f"added cell, of which its own scoring (three sets, exact metrics; the rows' `run_cpu_seconds`, mean of "
              f"{len(own)}) is {own_cell:.2f}: **{per_cell - own_cell:.2f} CPU-s per cell beyond its own scoring** "
              "(Hydra's job setup, the config checks, the row and score writes); the model, the decoded sets and "
              "the representations are reused across the cells of the sweep (keyed by content).", ""]
    # make tables: every page, then a synthetic page at x1 and x10 rows
    tables = []
    for _ in range(args.rounds):
        out = tmp / "tables-results"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(REPO_ROOT / "results", out)
        tables.append(timed([PY, "-m", "oodbench", "tables", "--results", str(out)])[1])
    record("fixed", "make tables, every page", cpu_s=round(min(tables), 2))
    growth = _tables_growth(tmp)
    pages = len(list((REPO_ROOT / "oodbench" / "conf" / "paper").glob("*.yaml")))
    lines += [f"- `make tables` for every page ({pages} pages): **{min(tables):.1f} CPU-s** (min of {args.rounds}), "
              f"one Hydra compose per page and indexed row lookups; a synthetic grid page of {growth[0][0]} cells "
              f"took {growth[0][1]:.2f} CPU-s, at "
              f"{growth[1][0]} cells {growth[1][1]:.2f} CPU-s ({growth[1][1] / growth[0][1]:.1f}× for 10× the "
              "rows).", ""]
    lines += _importtime_lines(tmp, env)
    return lines


def _tables_growth(tmp: Path) -> list[tuple[int, float]]:
    """``oodbench tables --only synthetic`` on a page of N and 10·N cells (a grid over ``protocol.seed``), every cell
    stored (a copy of one real post-hoc row file with its run name): CPU-s per size."""
    import pandas as pd

    from oodbench.tables.cells import spec_cells

    out = []
    src = next((REPO_ROOT / "results" / "runs" / "posthoc_cifar").glob("cifar10-dice*energy*.csv"))
    for n_seeds in (4, 40):
        root = tmp / f"growth{n_seeds}"
        shutil.rmtree(root, ignore_errors=True)
        configs, results = root / "conf", root / "results"
        shutil.copytree(REPO_ROOT / "oodbench" / "conf", configs)
        for p in (configs / "paper").iterdir():
            p.unlink()
        seeds = ",".join(str(s) for s in range(n_seeds))
        spec = f"""# @package _global_
result_set: synthetic
hydra:
  mode: MULTIRUN
  sweeper:
    _target_: hydra_plugins.oodbench_paper.paper_sweeper.PaperSweeper
paper:
  title: synthetic growth page
  cells:
    - {{arch.weights: dice, detector: "msp,energy,maxlogit", protocol.seed: "{seeds}"}}
  blocks:
    - kind: grid
      per_checkpoint: true
      row_head: Detector
      checkpoints: [dice_densenet_cifar10]
      detectors: [msp, energy, maxlogit]
      metrics:
        - {{ours: auroc, heading: "### AUROC"}}
"""
        (configs / "paper" / "synthetic.yaml").write_text(spec)
        (results / "runs" / "synthetic").mkdir(parents=True)
        df = pd.read_csv(src)
        for c in spec_cells("synthetic", [{"arch.weights": "dice", "detector": "msp,energy,maxlogit",
                                           "protocol.seed": seeds}], configs):
            df.assign(run_name=c.run_name, detector=c.run_name.split("-")[2]).to_csv(
                results / "runs" / "synthetic" / f"{c.run_name}.csv", index=False)
        (results / "paper").mkdir()
        cpu = timed([PY, "-m", "oodbench", "tables", "--configs", str(configs), "--results", str(results)])[1]
        out.append((3 * n_seeds, cpu))
        record("fixed", f"make tables, synthetic page of {3 * n_seeds} cells", cpu_s=round(cpu, 2))
    return out


HEAVY = ("torchvision", "timm", "pandas", "matplotlib", "sklearn", "scipy")


def _imported(stderr: str) -> set[str]:
    return {ln.split("|")[-1].strip() for ln in stderr.splitlines() if ln.startswith("import time:")}


def _importtime_lines(tmp: Path, env: dict[str, str]) -> list[str]:
    cli = subprocess.run([PY, "-X", "importtime", "-c", "import oodbench.cli"], capture_output=True, text=True,
                         cwd=REPO_ROOT)
    served = subprocess.run([PY, "-X", "importtime", "run.py", "detector=energy", "id=cifar10", "result_set=bench",
                             "ood=[isun,lsun_resize,gaussian]", f"hydra.run.dir={tmp / 'imp'}"], capture_output=True,
                            text=True, cwd=REPO_ROOT, env={**os.environ, **env})
    rows = []
    for what, proc in (("`import oodbench.cli`", cli), ("a warm served DenseNet run", served)):
        mods = _imported(proc.stderr)
        heavy = [h for h in HEAVY if h in mods]
        rows.append(f"| {what} | {', '.join(heavy) or 'none'} | {'yes' if 'torch' in mods else 'no'} |")
        record("imports", what, heavy=";".join(heavy) or "none", torch="torch" in mods)
    return ["- imports (`python -X importtime`):", "", "| command | imports of " + ", ".join(HEAVY) + " | torch |",
            "|---|---|---|", *rows, ""]


# ------------------------------------------------------------------------------------------- (5) the forward
def forward_section(args: argparse.Namespace, tmp: Path) -> list[str]:
    import warnings

    import numpy as np
    import torch

    from oodbench.data.base import to_tensor
    from oodbench.models.normalized import Classifier
    from oodbench.models.registry import build_arch, load_classifier

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's deprecation notices
    probe = to_tensor(np.zeros((2, 32, 32, 3), np.uint8))
    nhwc = probe.is_contiguous(memory_format=torch.channels_last) and not probe.is_contiguous()
    record("forward", "loader batches are NHWC-strided", value=nhwc)
    dense, _ = load_classifier("dice_densenet_cifar10")
    resnet = Classifier(build_arch("resnet50", 1000), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    nets = {"DenseNet-BC-100, 32 px": (dense.eval(), torch.rand(args.fwd_n, 3, 32, 32), 128),
            "ResNet-50, 224 px": (resnet.eval(), torch.rand(args.fwd_n_resnet, 3, 224, 224), 16)}
    today = "no_grad, loader batch (today)"
    lines = ["## 5. The forward: modes that might be faster", "",
             "Today's batches reach the network "
             f"{'NHWC-strided (channels-last memory, NCHW shape)' if nhwc else 'NCHW-contiguous'}: "
             "`oodbench.data.base.to_tensor` permutes (N, H, W, 3) pixels without a copy, and `.float()` keeps the "
             "strides; the network's weights are NCHW-contiguous. Today's CPU pass also runs with glibc's heap "
             "pooled (`oodbench/heap.py`); every mode below does too (the heap itself: the next table). "
             f"{args.fwd_n} (DenseNet) and {args.fwd_n_resnet} (ResNet-50, random weights) random images, "
             f"{args.rounds} interleaved rounds, best images/s; `max |Δ logit|` against today's path.", "",
             "| network | mode | images/s | vs today | max abs Δ logit |", "|---|---|---|---|---|"]
    verdict = {}
    for net_name, (m, x, bs) in nets.items():
        modes = _modes(m, x[:bs])
        inputs = {k: prep(x) for k, (prep, _) in modes.items()}
        ref = _run_mode(modes[today][1], inputs[today], bs)
        times: dict[str, list[float]] = {k: [] for k in modes}
        diffs = {k: float((_run_mode(f, inputs[k], bs) - ref).abs().max()) for k, (_, f) in modes.items()}
        for _ in range(args.rounds):
            for k, (_, f) in modes.items():
                t = time.perf_counter()
                _run_mode(f, inputs[k], bs)
                times[k].append(time.perf_counter() - t)
        base = min(times[today])
        for k, v in times.items():
            lines.append(f"| {net_name} | {k} | {len(x) / min(v):.1f} | {base / min(v):.2f}× | {diffs[k]:.1e} |")
            record("forward", f"{net_name}|{k}", images_per_s=round(len(x) / min(v), 2),
                   speedup=round(base / min(v), 3), max_abs_logit_diff=diffs[k])
            verdict.setdefault(k, []).append((base / min(v), diffs[k]))
    adopt = [k for k, v in verdict.items() if k != today and all(sp >= 1.03 and d == 0.0 for sp, d in v)]
    record("forward", "meets the rule", value=";".join(adopt) or "none")
    lines += ["", "- Rule: a mode could replace today's path only if its logits are identical (max |Δ| = 0) and it is "
              "at least 3 % faster on both networks; a mode that changes logits could only be a recorded numeric "
              f"mode. **Meets the rule in this run: {', '.join(adopt) or 'none'}**"
              + (" (a candidate: adopted only once the stored cells rerun with it agree to AUROC 1e-6)." if adopt
                 else " (every faster mode here changes the logits, or no mode is faster on both).")]
    return lines + _heap_lines(args, tmp)


def _modes(m: Any, example: Any) -> dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]]:
    import copy

    import torch

    cl = copy.deepcopy(m).to(memory_format=torch.channels_last)
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(copy.deepcopy(m), example))
        onednn = torch.jit.optimize_for_inference(torch.jit.trace(copy.deepcopy(m), example))

    def grad_off(f: Callable[[Any], Any], ctx: Any) -> Callable[[Any], Any]:
        def run(x: Any) -> Any:
            with ctx():
                return f(x)
        return run

    def loader(x: Any) -> Any:  # the strides oodbench's loader gives a batch (NHWC memory, NCHW shape)
        return x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)

    def same(x: Any) -> Any:
        return x

    # (how the batch is laid out before timing, the call); the loader's layout costs nothing there (a permute)
    return {"no_grad, loader batch (today)": (loader, grad_off(m, torch.no_grad)),
            "no_grad, NCHW-contiguous batch": (same, grad_off(m, torch.no_grad)),
            "inference_mode, loader batch": (loader, grad_off(m, torch.inference_mode)),
            "channels_last model + batch": (loader, grad_off(cl, torch.no_grad)),
            "TorchScript freeze": (same, grad_off(frozen, torch.no_grad)),
            "TorchScript optimize_for_inference (oneDNN)": (same, grad_off(onednn, torch.no_grad))}


def _run_mode(f: Callable[[Any], Any], x: Any, bs: int) -> Any:
    import torch

    from oodbench.heap import pooled_heap

    with pooled_heap():  # the whole pass, as runner.forward.map_batches runs it
        return torch.cat([f(x[i:i + bs]).float() for i in range(0, len(x), bs)])


HEAP_PASS = """
import json, sys, time, torch
from oodbench.heap import pooled_heap
from oodbench.models.normalized import Classifier
from oodbench.models.registry import build_arch, load_classifier
net, n, bs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
if net == "densenet":
    m, px = load_classifier("dice_densenet_cifar10")[0], 32
else:
    m, px = Classifier(build_arch("resnet50", 1000), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), 224
x = torch.rand(n, px, px, 3).permute(0, 3, 1, 2)  # the loader's strides
with torch.no_grad(), pooled_heap():
    m.eval()(x[:bs])
    t = time.perf_counter()
    y = torch.cat([m(x[i:i + bs]) for i in range(0, n, bs)])
    dt = time.perf_counter() - t
torch.save(y, out)
print(json.dumps(dt))
"""


def _heap_lines(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Today's pooled heap against glibc's own, each a fresh process (a long-lived process's glibc has raised its
    mmap threshold already, so in-process interleaving would understate the difference)."""
    import torch

    lines = ["", "The heap: the same pass (loader strides, `no_grad`, batch 128 / 16) in a fresh process, with "
             "`OODBENCH_HEAP=system` (glibc maps and unmaps every activation above its mmap threshold) and with "
             f"today's pooled heap (`oodbench/heap.py`); {args.rounds} interleaved rounds, best images/s.", "",
             "| network | heap | images/s | vs system | max abs Δ logit |", "|---|---|---|---|---|"]
    out = {}
    for net, n, bs in (("densenet", args.fwd_n, 128), ("resnet50", args.fwd_n_resnet, 16)):
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for heap in ("system", "pooled"):
                proc = subprocess.run([PY, "-c", HEAP_PASS, net, str(n), str(bs), str(tmp / f"{net}-{heap}.pt")],
                                      capture_output=True, text=True, cwd=REPO_ROOT, check=True,
                                      env={**os.environ, "OODBENCH_HEAP": heap})
                best[heap] = min(best.get(heap, 1e9), float(json.loads(proc.stdout.strip().splitlines()[-1])))
        diff = float((torch.load(tmp / f"{net}-system.pt") - torch.load(tmp / f"{net}-pooled.pt")).abs().max())
        for heap in ("system", "pooled"):
            lines.append(f"| {net} | {heap} | {n / best[heap]:.1f} | {best['system'] / best[heap]:.2f}× | "
                         f"{0.0 if heap == 'system' else diff:.1e} |")
        out[net] = best["system"] / best["pooled"]
        record("forward", f"{net}|pooled heap vs system heap", speedup=round(out[net], 3), max_abs_logit_diff=diff,
               images_per_s_system=round(n / best["system"], 2), images_per_s_pooled=round(n / best["pooled"], 2))
    return lines + ["", f"- **Pooled heap: {out['densenet']:.2f}× (DenseNet-BC-100) and {out['resnet50']:.2f}× "
                    "(ResNet-50)** with identical logits: adopted (every CPU pass of "
                    "`runner.forward.map_batches`).", ""]


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--heavy-rounds", type=int, default=None,
                    help="rounds of sections 1 and 3 (the peer's natural side alone takes ~18 min a round on 2 cores); "
                         "default --rounds")
    ap.add_argument("--sets", default="isun,lsun_resize")
    ap.add_argument("--n-ood", type=int, default=1000)
    ap.add_argument("--odin-n", type=int, default=300)
    ap.add_argument("--table-sets", default="isun,lsun_resize,tin_resize,gaussian,uniform,tin_crop")
    ap.add_argument("--table-n", type=int, default=200)
    ap.add_argument("--table-fit", type=int, default=100)
    ap.add_argument("--cells", type=int, default=9)
    ap.add_argument("--fwd-n", type=int, default=512)
    ap.add_argument("--fwd-n-resnet", type=int, default=32)
    ap.add_argument("--sections", default="product,odin,table,fixed,forward")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench.md")
    args = ap.parse_args()
    args.heavy_rounds = args.heavy_rounds or args.rounds
    import torch

    from oodbench.runner.provenance import git_commit

    t0 = time.perf_counter()
    commit = git_commit()
    commit = commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")
    head = [f"# oodbench benchmark: the product path — {torch.get_num_threads()} CPU threads", "",
            f"Command: `python scripts/bench.py {' '.join(sys.argv[1:])}` (git {commit}, torch "
            f"{torch.__version__}; data and weights from `{resolve('data')}` / `{resolve('weights')}`). Every number "
            f"was measured in this run; the raw rows are in `{args.out.with_suffix('.csv').name}` "
            "(`tests/test_bench_record.py` recounts the headline ratios of `bench.csv`). The earlier in-process core "
            "benchmark is `bench_core.md` (`scripts/bench_core.py`).", ""]
    body: list[str] = []
    with tempfile.TemporaryDirectory(prefix="oodbench-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        sections = {"product": lambda: product_section(args, tmp), "odin": lambda: odin_section(args, tmp),
                    "table": lambda: table_section(args, tmp), "fixed": lambda: fixed_section(args, tmp),
                    "forward": lambda: forward_section(args, tmp)}
        for name in args.sections.split(","):
            t = time.perf_counter()
            part = sections[name]()
            body += part
            print("\n".join(part), flush=True)
            print(f"[{name}: {time.perf_counter() - t:.0f} s]", flush=True)
    gpu = ["## 6. GPU", "", "No GPU was available to this run. `scripts/bench_gpu.sh` (one command, under 5 minutes on "
           "one GPU) measures extraction throughput against the bare forward loop (fp32, TF32, bf16 AMP; batch 256 "
           "and 512; DenseNet-BC-100 at 32 px and ResNet-50 at 224 px) and the whole post-hoc table against one "
           "forward pass; it is tested on the CPU (`tests/test_bench_gpu_script.py`).", ""]
    text = "\n".join(head + body + gpu + [f"Whole run: {time.perf_counter() - t0:.0f} s."]) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    keys = list(dict.fromkeys(k for r in ROWS for k in r))
    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(ROWS)
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
