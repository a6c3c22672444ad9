"""The Python API (issue 18): the README's example runs as written; ``oodbench.evaluate`` on a registered DenseNet
gives run.py's rows for the same detector and images; an in-memory model (not in the registry) works by its
parameters' digest, so a changed weight is never served; your own tensors are data sets; results save the files
run.py writes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import oodbench
from oodbench.errors import OodbenchError
from oodbench.paths import REPO_ROOT

SMALL = {"max_id": 200, "max_ood": 200, "bootstrap": 20}


def readme_example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture()
def api_env(run_cli, monkeypatch, tmp_path):
    """The API reads the same data, weights and cache as the CLI tests (decoded archives are shared)."""
    monkeypatch.setenv("OODBENCH_CACHE", str(run_cli.cache))
    monkeypatch.chdir(tmp_path)
    return run_cli


@pytest.mark.slow
def test_the_readme_example_runs(api_env, tmp_path):
    ns: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), ns)  # noqa: S102 — the documented example, as written
    res = ns["res"]
    assert set(res.table.detector) == {"energy", "knn"} and set(res.table.ood_dataset) == {"isun"}
    first = ns["first"]
    assert set(first.table.detector) == {"msp", "energy", "knn", "ash_s"}
    assert set(first.table.ood_dataset) == {"isun", "lsun_resize", "gaussian"}
    assert {"fpr95", "fpr95_std", "auroc", "auroc_std"} <= set(first.table.columns)
    assert "| isun |" in first.summary()
    saved = tmp_path / "runs" / "mine"
    assert len(list(saved.glob("*/metrics.csv"))) == 4 and len(list(saved.glob("*/scores.npz"))) == 4
    assert (saved / "summary.md").is_file()


def test_api_rows_equal_run_py(api_env):
    """Same detector, checkpoint and images: the API and run.py give the same numbers (AUROC to 1e-6)."""
    res = oodbench.evaluate("dice_densenet_cifar10", id="cifar10", detectors=["energy", ("ash_s", {"p": 90})],
                            ood=["isun", "gaussian"], **SMALL)
    for det, extra in (("energy", ()), ("ash_s", ("detector.p=90",))):
        proc = api_env("arch.weights=dice", f"detector={det}", *extra, "ood=[isun,gaussian]", "protocol.max_id=200",
                       "protocol.max_ood=200", "protocol.bootstrap=20")
        assert proc.returncode == 0, proc.stderr[-2000:]
        cli = pd.read_csv(Path(api_env.last_out) / "metrics.csv").set_index("ood_dataset")
        api = res.frame[res.frame.detector == det].set_index("ood_dataset")
        for s in ("isun", "gaussian"):
            assert abs(api.auroc[s] - cli.auroc[s]) < 1e-6 and abs(api.fpr95[s] - cli.fpr95[s]) < 1e-6
            assert api.n_ood[s] == cli.n_ood[s] and api.inputs_id[s] == cli.inputs_id[s]
    assert res.frame.checkpoint_sha256.iloc[0] == api.checkpoint_sha256.iloc[0]


def test_an_in_memory_network_is_its_parameters(api_env):
    """The registered DenseNet handed over as a plain nn.Module (features = the input of ``fc``, its normalization
    given) gives the registered model's numbers; changing one weight changes the model's digest, so nothing is served
    from the cache, and the row records the model as in-memory with that digest."""
    from oodbench.models.registry import load_classifier

    named = oodbench.evaluate("dice_densenet_cifar10", detectors=["energy"], ood=["gaussian"], **SMALL)
    clf, _ = load_classifier("dice_densenet_cifar10")
    mean, std = clf.mean.flatten().tolist(), clf.std.flatten().tolist()
    res = oodbench.evaluate(clf.net, detectors=["energy"], ood=["gaussian"], features="fc", normalize=(mean, std),
                            **SMALL)
    row = res.frame.iloc[0]
    assert row.checkpoint == "in-memory DenseNet3" and len(row.checkpoint_sha256) == 64
    assert abs(row.auroc - named.frame.auroc.iloc[0]) < 1e-6
    with torch.no_grad():
        clf.net.fc.bias[0] += 1.0
    changed = oodbench.evaluate(clf.net, detectors=["energy"], ood=["gaussian"], features="fc",
                                normalize=(mean, std), **SMALL)
    assert changed.frame.checkpoint_sha256.iloc[0] != row.checkpoint_sha256
    assert changed.frame.cache.iloc[0].endswith("hits=0 misses=2")  # ID and OOD recomputed, not served
    assert changed.frame.auroc.iloc[0] != row.auroc


def test_your_own_tensors_are_data_sets(api_env, tmp_path):
    """ID, fit and OOD as tensors / datasets: identified by their bytes; the feature detectors fit on ``fit``."""
    from oodbench.data.cifar import load_cifar
    from oodbench.paths import resolve

    test = load_cifar("cifar10", str(resolve("data")), subset="cifar10/cifar10-exact-subset.npz")
    train = load_cifar("cifar10", str(resolve("data")), split="train", subset="cifar10/cifar10-exact-subset.npz")
    x = torch.from_numpy(test.images[:150]).permute(0, 3, 1, 2)  # uint8 pixels
    fit = torch.utils.data.TensorDataset(torch.from_numpy(train.images[:400]).permute(0, 3, 1, 2).float() / 255,
                                         torch.from_numpy(train.labels[:400]))
    noise = torch.rand(100, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = oodbench.evaluate("odin_densenet10", id=(x, torch.from_numpy(test.labels[:150])), id_name="cifar10",
                            detectors=["msp", "knn"], ood={"noise": noise}, fit=fit, bootstrap=10)
    t = res.table
    assert set(t.detector) == {"msp", "knn"} and (t.n_id == 150).all() and (t.n_ood == 100).all()
    assert (t.auroc > 90).all()  # uniform noise is far from CIFAR-10 for this network
    assert res.frame.id_source.iloc[0] == "cifar10 150/150 (in-memory data (150 images))"
    assert res.frame.id_acc.iloc[0] > 0.9


def test_bad_api_arguments_are_one_line(api_env):
    cases = [
        (dict(detectors=["no_such"]), "unknown detector 'no_such"),
        (dict(detectors=["msp"], max_odd=3), "unknown protocol option 'max_odd'"),
        (dict(detectors=["msp"], ood={"x": torch.zeros(4, 32, 32)}), "images must be (N, 3, H, W)"),
        (dict(detectors=["msp"], ood={"x": torch.full((4, 3, 32, 32), 2.0)}), "float images must be pixels in [0, 1]"),
        (dict(detectors=["msp"], batch_size=0), "batch_size=0 is not allowed"),
    ]
    for kw, fragment in cases:
        with pytest.raises(OodbenchError) as err:
            oodbench.evaluate("odin_densenet10", **{"ood": ["gaussian"], **SMALL, **kw})
        assert fragment in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(OodbenchError, match="unknown model 'resnet9000'"):
        oodbench.evaluate("resnet9000")
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10), torch.nn.Flatten(0))
    with pytest.raises(OodbenchError, match=r"the model maps a batch of \d+ images to \(\d+,\); oodbench needs logits"):
        oodbench.evaluate(flat, id="cifar10", detectors=["msp"], ood=["gaussian"], **SMALL)


def test_results_plot_and_the_cli_figures(api_env, tmp_path):
    res = oodbench.evaluate("odin_densenet10", detectors=[("ash", {"p": 80})], ood=["gaussian"], **SMALL)
    (png,) = res.plot(tmp_path / "fig")
    assert png.stat().st_size > 5000 and oct(png.stat().st_mode)[-3:] == "644"
    proc = api_env("detector=msp", "ood=[gaussian]", "figures=true", "protocol.max_id=200", "protocol.max_ood=200",
                   "protocol.bootstrap=20")
    assert proc.returncode == 0 and "figures: 1 in " in proc.stdout, proc.stderr[-1500:]
    for f in ("metrics.csv", "scores.npz"):  # readable by the group on a shared cluster filesystem
        assert (Path(api_env.last_out) / f).stat().st_mode & 0o777 == 0o644


def test_python_m_oodbench_is_the_cli(api_env, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "oodbench", "--help"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0 and "detector: " in proc.stdout and "energy" in proc.stdout, proc.stderr[-1500:]
    assert np  # numpy used by the fixtures' data
