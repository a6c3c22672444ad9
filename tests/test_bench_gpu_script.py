"""The GPU benchmark script cannot fail on a typo when a GPU machine is lent: it runs here on the CPU with tiny sizes
and writes its report and CSV (issue 22, item 4)."""

from __future__ import annotations

import csv
import os
import subprocess

from oodbench.paths import REPO_ROOT


def test_the_gpu_bench_runs_on_the_cpu(tmp_path, shared_data, shared_weights):
    env = {**os.environ, "OUT": str(tmp_path), "DEVICE": "cpu", "OODBENCH_CACHE": str(tmp_path / "cache"),
           "OODBENCH_DATA": str(shared_data), "OODBENCH_WEIGHTS": str(shared_weights)}
    proc = subprocess.run([str(REPO_ROOT / "scripts" / "bench_gpu.sh"), "--n-images", "8", "--resnet-images", "2",
                           "--batches", "2,4", "--workers", "0", "--table-n", "20", "--table-fit", "60"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "bench_gpu.md").read_text()
    assert "## Extraction vs the bare forward loop" in md and "## The whole post-hoc table" in md
    with open(tmp_path / "bench_gpu.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["mode"] for r in rows if r["section"] == "extraction"} == {"fp32", "tf32", "bf16"}
    assert len([r for r in rows if r["section"] == "extraction"]) == 2 * 2 * 3  # nets × batches × modes
