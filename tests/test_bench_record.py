"""``results/bench.md``'s headline figures are recounted from the rows the same run wrote (``results/bench.csv``): a
ratio on the page is the ratio of the measured times, never a number typed in (issue 22)."""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict

import pytest

from oodbench.paths import REPO_ROOT

MD, CSV = REPO_ROOT / "results" / "bench.md", REPO_ROOT / "results" / "bench.csv"


@pytest.fixture(scope="module")
def bench() -> tuple[str, list[dict[str, str]]]:
    with open(CSV) as f:
        return MD.read_text(), list(csv.DictReader(f))


def _walls(rows: list[dict[str, str]], section: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["section"] == section:
            out[r["name"]].append(float(r["wall_s"]))
    return out


def test_product_ratios_are_the_measured_times(bench) -> None:
    md, rows = bench
    walls = _walls(rows, "product")
    rounds = {len(v) for v in walls.values()}
    assert len(walls) == 5 and len(rounds) == 1  # every side measured in every round
    assert f"empty cache; {rounds.pop()} interleaved rounds; seconds min / median." in md  # the page says how many
    peer = min(walls["pytorch-ood, natural"])
    ceiling = float(next(r["ceiling"] for r in rows if r["section"] == "product_summary"))
    assert f"forward-count ceiling {ceiling:.2f}×" in md
    for side, times in walls.items():
        row = next(line for line in md.splitlines() if line.startswith(f"| {side} |"))
        shown = [float(x) for x in row.split("|")[2].split("/")]  # the CSV keeps 2 decimals, the page 1
        assert abs(shown[0] - min(times)) <= 0.051 and abs(shown[1] - statistics.median(times)) <= 0.051
        assert f"| {peer / min(times):.2f}× |" in row
        if side.startswith("oodbench"):  # (the share of the ceiling)
            assert f"| {peer / min(times) / ceiling:.2f} |" in row


def test_equal_allocator_ratio_is_the_measured_times(bench) -> None:
    md, rows = bench
    walls = _walls(rows, "product")
    ratio = min(walls["pytorch-ood, one shared pass, pooled heap"]) / min(walls["oodbench API"])
    assert f"it takes {ratio:.2f}× the wall time of oodbench's API" in md


def test_table_ratio_is_the_measured_times(bench) -> None:
    md, rows = bench
    walls = _walls(rows, "table")
    ratio = min(walls["a pass per configuration"]) / min(walls["one pass (oodbench API)"])
    assert f"**{ratio:.1f}×** (min / min)" in md


def test_fixed_costs_are_the_measured_cpu_seconds(bench) -> None:
    md, rows = bench
    served = [float(r["cpu_s"]) for r in rows if r["section"] == "fixed" and r["name"] == "warm served run"]
    assert len(served) >= 3 and f"**{min(served):.2f} CPU-s**" in md
    per_cell = next(float(r["cpu_s"]) for r in rows if r["name"] == "marginal CPU-s per multirun cell")
    own = next(float(r["cpu_s"]) for r in rows if r["name"] == "own scoring CPU-s per cell")
    beyond = next(float(r["cpu_s"]) for r in rows if r["name"] == "CPU-s per multirun cell beyond its own scoring")
    assert abs(per_cell - own - beyond) < 2e-3
    assert f"{per_cell:.2f} CPU-s per added cell" in md and f"**{beyond:.2f} CPU-s per cell beyond its own" in md
    tables = next(float(r["cpu_s"]) for r in rows if r["name"] == "make tables, every page")
    assert f"**{tables:.1f} CPU-s**" in md


def test_heap_speedups_are_the_measured_passes(bench) -> None:
    md, rows = bench
    heap = {r["name"].split("|")[0]: r for r in rows if r["name"].endswith("|pooled heap vs system heap")}
    assert set(heap) == {"densenet", "resnet50"}
    for r in heap.values():  # the pooled heap changes no number
        assert float(r["max_abs_logit_diff"]) == 0.0
        assert abs(float(r["images_per_s_pooled"]) / float(r["images_per_s_system"]) - float(r["speedup"])) < 0.01
    assert (f"**Pooled heap: {float(heap['densenet']['speedup']):.2f}× (DenseNet-BC-100) and "
            f"{float(heap['resnet50']['speedup']):.2f}× (ResNet-50)**") in md
