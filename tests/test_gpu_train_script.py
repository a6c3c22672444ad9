"""scripts/gpu_train_wrn.sh on CPU (SMOKE=1) with tiny archives laid out like the real ones: every phase runs
(classifier, energy_ft, oe on WRN-40-2), and $OUT holds the 8 files with the metadata the GPU run must produce.
Also: the device-side batches equal the host ones, the time budget's epoch rule, the JPEG training-set loader, and
the registry's not-yet-trained entries."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oodbench.data.base import ImageSet
from oodbench.errors import CheckpointError
from oodbench.models.registry import CHECKPOINTS, load_classifier
from oodbench.paths import REPO_ROOT
from oodbench.train.data import DeviceBatches, EpochBatches, limit, load_jpeg_cifar
from oodbench.train.loop import plan_epochs

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
OURS = ("wrn40_2_cifar10_ours", "wrn40_2_cifar10_energy_ft_ours", "wrn40_2_cifar10_oe_ours")


def _jpeg(rng: np.random.Generator, size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3)).astype(np.uint8)).save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def _tar(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def fake_data(root: Path, per_class: int = 2) -> Path:
    """cifar10-jpeg-{train,test}.tar.gz, the exact-subset npz and tin-outliers.tar.gz, tiny, real layouts."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        _tar(root / "cifar10" / f"cifar10-jpeg-{split}.tar.gz",
             {f"{split}/{c}/{i:04d}.jpg": _jpeg(rng, 32) for c in CLASSES for i in range(per_class)})
    n = 10 * per_class
    np.savez(root / "cifar10" / "cifar10-exact-subset.npz",
             test_images=rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8), test_index=np.arange(n),
             test_labels_all=rng.integers(0, 10, 10000), classes=np.array(CLASSES))
    _tar(root / "tinyimagenet" / "tin-outliers.tar.gz",
         {f"tin-outliers/n0{k % 3}/images/n0{k % 3}_{k}.JPEG": _jpeg(rng, 64) for k in range(24)})
    return root


def test_smoke_script_runs_every_phase_and_writes_the_outputs(tmp_path):
    data, out, work = fake_data(tmp_path / "data"), tmp_path / "out", tmp_path / "work"
    extra = ("datasets.cifar10.jpeg.train_sha256=null datasets.cifar10.jpeg.test_sha256=null outliers.sha256=null "
             "batch_size=4 outlier_batch_size=4")
    env = dict(os.environ, SMOKE="1", SMOKE_N="8", OUT=str(out), WORK=str(work), OODBENCH_DATA=str(data),
               OMP_NUM_THREADS="1",  # 3 WRN-40-2 processes: one thread each is 10x faster on a loaded 2-core host
               EXTRA=extra)
    res = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_train_wrn.sh")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([f"{n}.pt" for n in OURS] + ["classifier.log.csv", "energy_ft.log.csv", "oe.log.csv",
                                                         "metadata.json", "run.log"])
    assert all((out / f).stat().st_size < 16 * 2**20 for f in files)
    doc = json.loads((out / "metadata.json").read_text())
    assert doc["smoke"] is True and set(doc["phases"]) == {"classifier", "energy_ft", "oe"}
    cls = doc["phases"]["classifier"]
    for phase, name in zip(("classifier", "energy_ft", "oe"), OURS):
        m = doc["phases"][phase]
        for key in ("sha256", "recipe", "data", "epochs", "accuracy", "settings", "method_hyperparams", "init",
                    "git_commit", "command", "timings"):
            assert key in m, (phase, key)
        assert m["registry_name"] == name and m["out_file"] == f"{name}.pt"
        assert m["sha256"] == __import__("hashlib").sha256((out / f"{name}.pt").read_bytes()).hexdigest()
        assert set(m["accuracy"]) == {"exact_test", "jpeg_test"} and m["accuracy"]["jpeg_test"]["n"] == 8
        assert m["epochs"]["trained"] == 1 and m["epochs"]["time_budget_s"] == 600
        assert m["recipe"]["dropout"] == 0.3 and m["recipe"]["channels_last"] and m["recipe"]["data_on_device"]
        assert m["data"]["id_count"] == 8 and "JPEG re-encode" in m["data"]["id"]
        assert m["arch"] == "wrn40_2" and m["method"] == {"classifier": "classifier"}.get(phase, phase)
        model, prov = load_classifier(None, path=out / f"{name}.pt")
        assert prov["arch"] == "wrn40_2" and prov["num_classes"] == 10
    assert cls["settings"]["lr"] == 0.1 and cls["settings"]["weight_decay"] == 5e-4 and cls["init"]["name"] is None
    ft = doc["phases"]["energy_ft"]
    assert ft["method_hyperparams"] == {"m_in": -23.0, "m_out": -5.0, "lam": 0.1}
    assert ft["init"]["sha256"] == cls["sha256"] and ft["settings"]["lr"] == 0.001
    assert doc["phases"]["oe"]["method_hyperparams"] == {"lam": 0.5}
    assert "classifier: budget" in (out / "run.log").read_text()


def test_device_batches_equal_host_batches():
    rng = np.random.default_rng(1)
    ims = rng.integers(0, 256, (21, 32, 32, 3)).astype(np.uint8)
    id_set = ImageSet("t", ims, rng.integers(0, 10, 21), "t", 21, np.arange(21), "t")
    outl = ImageSet("o", ims[:9], None, "o", 9, np.arange(9), "o")
    host = EpochBatches(id_set, outl, 8, 5, seed=3)
    dev = DeviceBatches(EpochBatches(id_set, outl, 8, 5, seed=3), torch.device("cpu"))
    for epoch in (1, 2):
        host.set_epoch(epoch)
        dev.set_epoch(epoch)
        got = list(dev)
        assert len(got) == len(host) == 3
        for i, (x, y, o) in enumerate(got):
            hx, hy, ho = host[i]
            assert torch.equal(x, hx) and torch.equal(y, hy) and torch.equal(o, ho)


def test_plan_epochs_fits_the_budget():
    assert plan_epochs(100, 300.0, 10.0, 4.0, safety=1.0) == 73   # 1 + floor(290 / 4)
    assert plan_epochs(100, 1000.0, 10.0, 4.0) == 100             # capped at the request
    assert plan_epochs(10, 5.0, 10.0, 4.0) == 1                   # nothing more fits: epoch 1 only


def test_jpeg_loader_labels_by_class_folder(tmp_path):
    data = fake_data(tmp_path / "data", per_class=2)
    s = load_jpeg_cifar("cifar10", data, tmp_path / "cache", "cifar10/cifar10-jpeg-train.tar.gz", None, "train",
                        CLASSES, 50000)
    assert s.images.shape == (20, 32, 32, 3) and list(s.labels) == [c for c in range(10) for _ in range(2)]
    sub = limit(s, 6, 0, "train_limit")
    assert len(sub) == 6 and sub.notes and list(sub.indices) == sorted(sub.indices)


@pytest.mark.parametrize("name", OURS)
def test_untrained_registry_entries_fail_with_the_command(name):
    assert CHECKPOINTS[name].sha256 is None  # pinned after the GPU run (weights/trained/README.md)
    with pytest.raises(CheckpointError) as err:
        load_classifier(name)
    msg = str(err.value)
    assert "\n" not in msg and f"checkpoint {name} is not trained yet" in msg
    assert "bash scripts/gpu_train_wrn.sh" in msg and "python train.py method=" in msg
