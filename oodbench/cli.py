"""Command-line glue for ``run.py``: choice checks before Hydra starts, one-line errors, the printed table."""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from oodbench.errors import OodbenchError
from oodbench.runner.checks import preflight
from oodbench.runner.main import run
from oodbench.runner.provenance import stable_hash, write_csv
from oodbench.runner.store import result_path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
GROUPS = ("id", "arch", "detector", "protocol", "ood", "paper", "paths")
PCT = ["fpr95", "auroc", "aupr_in", "aupr_out", "detection_error", "fpr95_oodpos"]
log = logging.getLogger("oodbench")
# Job directories carry this process's id and a random suffix: concurrent runs started in the same second never
# share (and overwrite) a directory.
OmegaConf.register_new_resolver("oodbench_uid", lambda: f"{os.getpid()}-{secrets.token_hex(2)}", use_cache=True,
                                replace=True)


def check_choices(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Reject ``group=name`` overrides naming no config file, listing the choices, before Hydra's own error."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS:
            continue
        choices = sorted(p.stem for p in (config_dir / key).glob("*.yaml"))
        for name in value.strip("[]").split(","):
            if name and name not in choices:
                fail(f"unknown {key} {name!r}; choose from: {', '.join(choices)}")


def fail(message: str) -> None:
    print(f"oodbench: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def derive_run_name(cfg: DictConfig) -> str:
    """Deterministic name of a run from what defines its numbers (so a sweep can skip finished cells)."""
    det = OmegaConf.to_container(cfg.detector, resolve=True)
    identity = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("id", "protocol", "ood")}
    identity.update(detector=det, checkpoint=str(cfg.arch.checkpoint))
    if cfg.get("tf32"):  # TF32 cells are other numbers (default off keeps the stored names)
        identity["tf32"] = True
    ckpt = Path(str(cfg.arch.checkpoint)).stem
    return f"{cfg.id.name}-{ckpt}-{cfg.detector_name}-{cfg.protocol.name}-{stable_hash(identity, 8)}"


def format_table(df: pd.DataFrame) -> str:
    ok = df[df.status == "ok"].copy()
    for c in PCT:
        ok[c] = 100 * ok[c]
    ok["n_ood"] = ok["n_ood"].astype(int)
    head = df.iloc[0]
    notes = head.id_notes if isinstance(head.id_notes, str) else ""  # a stored CSV reads an empty field as NaN
    lines = [
        f"detector {head.detector} {ok.detector_params.iloc[0] if len(ok) else ''} | protocol {head.protocol}",
        f"checkpoint {head.checkpoint} sha256 {head.checkpoint_sha256[:16]}… | arch {head.arch}",
        f"ID {head.id_source}; accuracy {100 * head.id_acc:.2f}%" + (f" [{notes}]" if notes else ""),
        f"git {head.git_commit} | {head.device} | {head.cache} | {head.run_seconds}s",
        ok[["ood_dataset", "n_ood", *PCT]].to_string(index=False, float_format=lambda v: f"{v:.2f}"),
    ]
    lines += [f"not run: {r.ood_dataset}: {r.message}" for r in df[df.status != "ok"].itertuples()]
    return "\n".join(lines)


def main(cfg: DictConfig) -> None:
    """The Hydra task: skip stored cells, run, print; errors are one line (a sweep records them and goes on)."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    OmegaConf.set_struct(cfg, False)
    try:
        preflight(cfg)
        if cfg.run_name is None:
            cfg.run_name = derive_run_name(cfg)
        df, served = run(cfg)
        if served:
            write_csv(df, Path.cwd() / "metrics.csv")
            print(f"stored result, nothing recomputed (rerun=true to force): {result_path(cfg)}")
        print(format_table(df))
    except OSError as err:  # disk full / read-only mid-run: one line, never a traceback
        _failed(cfg, multirun, OodbenchError(f"{err.strerror or err} ({getattr(err, 'filename', '') or 'no file'}); "
                                             "free space or fix permissions, then rerun (finished cells are kept)"))
    except OodbenchError as err:
        _failed(cfg, multirun, err)


def _failed(cfg: DictConfig, multirun: bool, err: OodbenchError) -> None:
    """One line and exit 2; in a sweep the cell is recorded and the others go on (the sweep exits 2 at its end)."""
    if not multirun:
        fail(str(err))
    print(f"oodbench: cell failed, sweep goes on: {err}", file=sys.stderr)
    write_csv(pd.DataFrame([{"run_name": cfg.run_name, "detector": cfg.detector_name, "status": "failed",
                             "message": str(err)}]), Path.cwd() / "failed.csv")
