"""Every YAML under configs/{detector,ood,id,arch} composes and names a real target with valid arguments, so a
``_target_`` typo fails here, not at run time. Detectors are built for real (cheap, no data or model)."""

from __future__ import annotations

import inspect

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_method
from omegaconf import OmegaConf

from oodbench.detectors.base import Detector
from oodbench.models.registry import ARCHS
from oodbench.paths import CONFIG_DIR
from oodbench.runner.build import build

CONFIGS = CONFIG_DIR


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _compose(*overrides: str):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _binds(node, *extra: str) -> None:
    spec = OmegaConf.to_container(node, resolve=True)
    fn = get_method(spec.pop("_target_"))
    spec.pop("meta", None)
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in spec if k not in params and not accepts_any]
    assert not unknown, f"{fn.__qualname__} takes no {unknown}"
    missing = [n for n, p in params.items() if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
               and n not in spec and n not in extra]
    assert not missing, f"{fn.__qualname__} needs {missing}"


@pytest.mark.parametrize("name", _names("detector"))
def test_every_detector_config_builds(name):
    cfg = _compose(f"detector={name}")
    det = build(cfg.detector, f"detector {name}")
    assert isinstance(det, Detector) and det.consumes in ("logits", "features", "model")


@pytest.mark.parametrize("name", _names("ood"))
def test_every_ood_config_names_a_loader(name):
    cfg = _compose(f"ood=[{name}]")
    _binds(cfg.ood[name], "data_dir", "cache_dir")


@pytest.mark.parametrize("name", _names("id"))
def test_every_id_config_names_a_loader(name):
    _binds(_compose(f"id={name}").id, "data_dir", "cache_dir")


@pytest.mark.parametrize("name", _names("arch"))
def test_every_arch_config_names_an_architecture(name):
    arch = _compose(f"arch={name}").arch
    if "_target_" in arch:
        _binds(arch, "weights_dir", "device")
    else:
        assert arch.name in ARCHS
