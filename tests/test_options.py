"""Every user-facing option with a wrong type, out of range, or impossible on this machine is one line naming the
option and the allowed values, exit 2 (issue 19). The bad values are generated from each option's declared type in
the tables (:data:`oodbench.runner.checks.OPTIONS`, :data:`oodbench.train.app.TRAIN_OPTIONS`, the constructors'
type hints), so a new option joins the test by being declared."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from oodbench.errors import OodbenchError
from oodbench.paths import CONFIG_DIR, REPO_ROOT
from oodbench.runner.build import build
from oodbench.runner.checks import OPTIONS, Option, check_options, check_table
from oodbench.train.app import TRAIN_OPTIONS


def bad_values(o: Option) -> list[Any]:
    """Values the option must refuse, from its declared kind and range (never from its check)."""
    out: list[Any] = [[1, 2], {"a": 1}]
    if not o.nullable:
        out.append(None)
    if o.kind in ("int", "number"):
        out += ["abc", True]
        out += [o.lo - 1] if o.lo is not None else []
        out += [o.hi] if o.hi is not None else []
        out += [1.5] if o.kind == "int" else [float("nan")]
    elif o.kind == "bool":
        out += ["maybe", 2]
    elif o.kind == "choice":
        out += ["no_such_choice", 3]
    elif o.kind == "name":
        out += ["has space", "a/b", ""]
    elif o.kind == "device":
        out += ["gpu", "cuda:x", 0]
    return out


def good_values(o: Option) -> list[Any]:
    out: list[Any] = [None] if o.nullable else []
    out += ["auto"] if o.auto else []
    out += {"int": [int(o.lo or 0), int(o.lo or 0) + 7], "number": [o.lo or 0.0, (o.lo or 0) + 0.25],
            "bool": [True, False], "choice": list(o.values), "name": ["x-1.2_a=b"], "device": ["cpu", "auto"]}[o.kind]
    return out


CASES = [(table, key, v) for table, options in (("run", OPTIONS), ("train", TRAIN_OPTIONS))
         for key, o in options.items() for v in bad_values(o)]


@pytest.mark.parametrize(("table", "key", "value"), CASES, ids=[f"{t}:{k}={v!r}" for t, k, v in CASES])
def test_a_bad_value_is_one_line_naming_the_option(table: str, key: str, value: Any) -> None:
    options = OPTIONS if table == "run" else TRAIN_OPTIONS
    cfg = OmegaConf.create({})
    OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(OodbenchError) as err:
        check_table(cfg, options)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{key}=") and options[key].allowed() in line


@pytest.mark.parametrize("key", [*OPTIONS, *(f"train:{k}" for k in TRAIN_OPTIONS)])
def test_the_allowed_values_pass(key: str) -> None:
    options, key = (TRAIN_OPTIONS, key[6:]) if key.startswith("train:") else (OPTIONS, key)
    for v in good_values(options[key]):
        cfg = OmegaConf.create({})
        OmegaConf.update(cfg, key, v, force_add=True)
        check_table(cfg, options)


def test_every_option_of_the_default_config_is_declared() -> None:
    """The options of config.yaml and of the default protocol are in the table (a new one must be declared)."""
    top = OmegaConf.load(CONFIG_DIR / "config.yaml")
    protocol = OmegaConf.load(CONFIG_DIR / "protocol" / "default.yaml")
    keys = {k for k in top if k not in ("defaults", "hydra", "detector_name")}
    keys |= {f"protocol.{k}" for k in protocol if k != "name"}
    assert keys <= set(OPTIONS), sorted(keys - set(OPTIONS))
    train = OmegaConf.load(CONFIG_DIR / "train" / "train.yaml")
    scalars = {k for k in train if not OmegaConf.is_config(train._get_node(k)) and k not in
               ("defaults", "id", "arch", "init", "normalization", "out", "method_name")}
    assert scalars <= set(TRAIN_OPTIONS), sorted(scalars - set(TRAIN_OPTIONS))


def test_a_cuda_device_on_a_machine_without_one_is_one_line() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = OmegaConf.create({"device": "cuda", "ood": {"x": {}}})
    with pytest.raises(OodbenchError, match=r"^device=cuda: this machine has 0 CUDA device\(s\) \(no CUDA\); use "):
        check_options(cfg)


def _detector_params() -> list[tuple[str, str, Any]]:
    """(detector config, parameter, a value of the wrong type) for every typed constructor argument of every
    detector YAML."""
    from hydra.utils import get_object

    out = []
    for path in sorted((CONFIG_DIR / "detector").glob("*.yaml")):
        node = OmegaConf.load(path)
        target = node.get("_target_")
        if target is None:
            continue
        hints = typing.get_type_hints(get_object(target).__init__)
        for arg in inspect.signature(get_object(target).__init__).parameters:
            hint = hints.get(arg)
            union = typing.get_origin(hint) in (typing.Union, __import__("types").UnionType)
            if hint in (float, int) or (union and {float, int} & set(typing.get_args(hint))):
                out.append((path.stem, arg, "abc"))
            elif hint is bool:
                out.append((path.stem, arg, "maybe"))
    return out


@pytest.fixture(scope="module")
def default_config() -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import oodbench.conf  # noqa: F401

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config")
    GlobalHydra.instance().clear()
    return cfg


@pytest.mark.parametrize(("detector", "arg", "value"), _detector_params())
def test_a_detector_parameter_of_the_wrong_type_names_it(default_config: Any, detector: str, arg: str,
                                                         value: Any) -> None:
    from oodbench.conf import option

    cfg = default_config.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.detector = option("detector", detector)
    cfg.detector[arg] = value
    with pytest.raises(OodbenchError) as err:
        build(cfg.detector, f"detector {detector}", "detector")
    assert str(err.value).startswith(f"detector.{arg}={value!r}: detector {detector} takes {arg} as ")


# ---------------------------------------------------------------------------------------- the command line

def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT, script: str = "run.py",
         timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / script), *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def _one_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    assert proc.returncode == code, proc.stdout[-1500:] + proc.stderr[-1500:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oodbench: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "fragment"), [
    (("batch_size=0",), "batch_size=0 is not allowed; use a whole number >= 1"),
    (("detector=ash", "detector.p=abc"), "detector.p='abc': detector ash takes p as a number"),
    (("protocol.max_ood=-5",), "protocol.max_ood=-5 is not allowed; use null or a whole number >= 1"),
    (("detectr=energy",), "unknown option 'detectr' in 'detectr=energy' (did you mean 'detector'?); options: "),
    (("detector=enrgy",), "(did you mean 'energy'?)"),
    (("ood.folder.path=/my", "dir/x"), "'dir/x' is not an override (key=value): if it is the rest of ood.folder"
                                      ".path's value, quote the whole value: ood.folder.path='\"/my dir/x\"'"),
    (("ood.folder.path=/tmp/dätä",), "quote the value: ood.folder.path='\"/tmp/dätä\"'"),
    (("detector.no_such_param=1",), "Could not override 'detector.no_such_param'"),
])
def test_cli_errors_are_one_line(args: tuple[str, ...], fragment: str, tmp_path: Path) -> None:
    line = _one_line(_cli(*args, f"hydra.run.dir={tmp_path}"))
    assert fragment in line, line


def test_train_cli_bad_option_is_one_line(tmp_path: Path) -> None:
    line = _one_line(_cli("lr=abc", f"out={tmp_path / 'o'}", script="train.py"))
    assert line == "oodbench: error: lr='abc' is not allowed; use a number >= 0"


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"),
                                            (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_is_one_line_exit_130_and_leaves_no_lock_or_temp(tmp_path: Path, shared_data: Path,
                                                                 shared_weights: Path, sig: int, code: int,
                                                                 word: str) -> None:
    """SIGINT (Ctrl-C) or SIGTERM (a SLURM time limit, ``kill``) during the forward pass: ``interrupted; finished
    cells are kept, ...``, exit 130 (143), no traceback, and the cache holds no lock or temp file."""
    cache = tmp_path / "cache"
    env = {**os.environ, "OODBENCH_CACHE": str(cache), "OODBENCH_DATA": str(shared_data),
           "OODBENCH_WEIGHTS": str(shared_weights)}
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "run.py"), "detector=msp", "ood=[gaussian]",
                             "protocol.max_ood=2000", "cache=true", f"hydra.run.dir={tmp_path / 'out'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
                            # a test runner started in the background (`cmd &`) ignores SIGINT, and its children inherit
                            # that; give the child Python's usual Ctrl-C, as a terminal would
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and not list(cache.glob("representations/*/*.lock")):
        time.sleep(0.2)  # the first forward pass holds its cache lock
    assert list(cache.glob("representations/*/*.lock")), "the run never started a forward pass"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert err.strip().splitlines()[-1] == (f"oodbench: {word}; finished cells are kept, rerun the same command "
                                            "to continue") and "Traceback" not in err
    assert not [p for p in cache.rglob("*") if p.name.endswith((".lock", ".tmp"))]
