"""The command line — ``oodbench ...``, ``python -m oodbench ...`` and ``python run.py ...`` are the same program:
a Hydra app over the configs shipped in the package (``oodbench/conf``), plus ``oodbench tables`` (= ``make
tables``).

Every way a command can go wrong before or during a run is one ``oodbench: error: ...`` line and exit 2: a
malformed or misspelt override (checked here, before Hydra), anything Hydra itself refuses while composing (its
message condensed to one line), a bad option (:func:`oodbench.runner.checks.preflight`), a failing cell. Ctrl-C is
one line and exit 130; finished cells are kept.
"""

from __future__ import annotations

import difflib
import io
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

import oodbench.conf  # noqa: F401 — registers the resolver the configs use
from oodbench.errors import OodbenchError, fail
from oodbench.paths import CONFIG_DIR, absolute, set_start_dir, start_dir

GROUPS = ("id", "arch", "detector", "protocol", "ood", "paper", "paths")
PCT = ["fpr95", "auroc", "aupr_in", "aupr_out", "detection_error"]
KEPT = "finished cells are kept, rerun the same command to continue"
INTERRUPTED = f"interrupted; {KEPT}"
log = logging.getLogger("oodbench")


# ------------------------------------------------------------------------------------------- before Hydra

def choices(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def top_level_keys(config_dir: Path = CONFIG_DIR) -> list[str]:
    """The keys of ``config.yaml`` (the options a run has besides the groups)."""
    return [str(k) for k in OmegaConf.load(config_dir / "config.yaml") if k != "defaults"]


def _closest(word: str, options: list[str]) -> str:
    hit = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {hit[0]!r}?)" if hit else ""


def check_overrides(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Reject, before Hydra starts, an override that cannot parse (e.g. an unquoted path with spaces), a misspelt
    option or group, and a group choice with no config file — each as one line naming the closest correct form."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = [a for a in argv if not a.startswith("-")]
    if not args:
        return
    parser = OverridesParser.create()
    known = [*GROUPS, *top_level_keys(config_dir), "hydra"]
    for i, arg in enumerate(args):
        if "=" not in arg and i and "=" in args[i - 1]:  # the shell split an unquoted value with spaces
            key, _, value = args[i - 1].partition("=")
            fail(f"{arg!r} is not an override (key=value): if it is the rest of {key}'s value, quote the whole "
                 f"value: {key}='\"{value} {arg}\"'")
        try:
            (ov,) = parser.parse_overrides([arg])
        except HydraException as err:
            key, _, value = arg.partition("=")
            odd = not value.isascii() or any(c in value for c in " ()[]{},:'\"")
            hint = f"; quote the value: {key}='\"{value}\"'" if odd else ""
            fail(f"cannot read the override {arg!r}: {str(err).splitlines()[0]}{hint}")
        key = ov.key_or_group.lstrip("+~")
        head = key.split(".")[0].split("@")[0]
        if head == "hydra" or key.startswith("hydra/"):
            continue
        if head not in known and not ov.is_add():
            fail(f"unknown option {head!r} in {arg!r}{_closest(head, known)}; options: {', '.join(sorted(known))}")
        if key in GROUPS and not ov.is_delete():
            have = choices(key, config_dir)
            values = ov.value()
            for name in (values if isinstance(values, list) else getattr(values, "list", None) or [values]):
                if str(name) not in have:
                    fail(f"unknown {key} {str(name)!r}; choose from: {', '.join(have)}{_closest(str(name), have)}")


class _HydraErrors(io.StringIO):
    """Holds what Hydra writes to stderr until the first job starts, so a composition error it reports in several
    lines (and exit 1) becomes one line and exit 2; once a job runs, stderr is the real one again."""

    def __init__(self, real: Any) -> None:
        super().__init__()
        self.real = real


def _release_stderr() -> None:
    if isinstance(sys.stderr, _HydraErrors):
        held, sys.stderr = sys.stderr, sys.stderr.real
        sys.stderr.write(held.getvalue())


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
    first = lines[0] if lines else "Hydra could not compose the configuration"
    detail = next((ln for ln in lines[1:] if ln.startswith(("Key '", "Could not", "Error", "full_key"))), "")
    return f"{first} {detail}".strip()


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a SLURM time limit or preemption, ``kill``): unwound like Ctrl-C, so temp files and locks go."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def entry(argv: list[str] | None = None) -> None:
    """The ``oodbench`` console script, ``python -m oodbench`` and ``run.py``."""
    import signal

    argv = list(sys.argv[1:] if argv is None else argv)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    if argv[:1] == ["tables"]:
        from oodbench.tables.build import main as tables

        return tables(argv[1:])
    check_overrides(argv)
    sys.argv = [sys.argv[0], *argv]
    sys.stderr = _HydraErrors(sys.stderr)
    try:
        _app()
    except KeyboardInterrupt as stop:
        _release_stderr()
        term = isinstance(stop, _Terminated)
        print(f"oodbench: {f'terminated (SIGTERM); {KEPT}' if term else INTERRUPTED}", file=sys.stderr)
        raise SystemExit(143 if term else 130) from None
    except SystemExit as done:
        held = sys.stderr.getvalue() if isinstance(sys.stderr, _HydraErrors) else None
        sys.stderr = sys.stderr.real if isinstance(sys.stderr, _HydraErrors) else sys.stderr
        if held is not None and done.code not in (0, None):
            fail(_one_line(held))
        if held:
            sys.stderr.write(held)
        raise
    _release_stderr()


# ------------------------------------------------------------------------------------------- the Hydra task

USER_PATHS = ("arch.checkpoint", "id.root", "id.path")


def absolute_paths(cfg: DictConfig) -> None:
    """Relative paths the user typed are relative to where the command was started, whatever directory a job runs
    in: ``paths.*`` always; ``arch.checkpoint``, ``id.root`` and ``ood.<set>.path`` when the file or folder exists
    there (else they keep their meaning relative to the weights / data directory)."""
    for k in ("data", "weights", "cache", "results"):
        v = cfg.paths.get(k)
        if v not in (None, ""):
            cfg.paths[k] = str(absolute(str(v)))
    keys = [*USER_PATHS, *(f"ood.{name}.path" for name in cfg.get("ood") or {})]
    for key in keys:
        v = OmegaConf.select(cfg, key, default=None)
        if isinstance(v, str) and v and not Path(v).expanduser().is_absolute():
            p = absolute(v)
            if p.exists():
                OmegaConf.update(cfg, key, str(p), force_add=False)


def _percent(v: float, sd: float | None) -> str:
    return f"{100 * v:.2f}" + (f" ± {100 * sd:.2f}" if sd is not None and sd == sd else "")


def format_table(rows: list[dict[str, Any]], written: Path | None = None) -> str:
    """The console table: provenance head, one line per OOD set in percent with the bootstrap σ, the rows' path."""
    ok = [r for r in rows if r.get("status") == "ok"]
    head = rows[0]
    notes = head.get("id_notes") if isinstance(head.get("id_notes"), str) and head.get("id_notes") else ""
    acc = _num(head.get("id_acc"))
    params = ok[0].get("detector_params", "") if ok else ""
    lines = [
        f"detector {head['detector']} {params} | protocol {head['protocol']}",
        f"checkpoint {head['checkpoint']} sha256 {str(head['checkpoint_sha256'])[:16]}… | arch {head['arch']}",
        f"ID {head['id_source']}; accuracy " + ("n/a" if acc is None else f"{100 * acc:.2f}%")
        + (f" [{notes}]" if notes else ""),
        f"git {head['git_commit']} | {head['device']} | {head.get('cache', '')} | {head.get('run_seconds', '')}s",
    ]
    if ok:
        cols = ["ood_dataset", "n_ood", *PCT]
        table = [[str(r["ood_dataset"]), str(int(float(r["n_ood"]))),
                  *(_percent(float(r[m]), _num(r.get(f"{m}_std"))) for m in PCT)] for r in ok]
        widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
        lines.append("metrics in percent (± bootstrap standard deviation); fpr95: ID positive")
        lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in [cols, *table]]
    lines += [f"not run: {r['ood_dataset']}: {r.get('message', '')}" for r in rows if r.get("status") != "ok"]
    if written is not None:
        lines.append(f"rows: {written}")
    return "\n".join(lines)


def _num(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if f != f else f


def main(cfg: DictConfig) -> None:
    """The Hydra task: check, skip a stored cell or run it, print; errors are one line (a sweep records them and goes
    on)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    _release_stderr()
    hc = HydraConfig.get()
    set_start_dir(hc.runtime.cwd)
    out = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    OmegaConf.set_struct(cfg, False)
    try:
        from oodbench.runner.checks import preflight
        from oodbench.store import derive_run_name

        absolute_paths(cfg)
        preflight(cfg)
        if cfg.run_name is None:
            cfg.run_name = derive_run_name(cfg)
        from oodbench.runner.main import run

        rows, served = run(cfg, out)
        if served:
            print(f"stored result, nothing recomputed (rerun=true to force): {cfg.run_name}")
        print(format_table(rows, out / "metrics.csv"))
        if cfg.get("figures"):
            _figures(rows, out)
    except OSError as err:  # disk full / read-only mid-run: one line, never a traceback
        _failed(cfg, multirun, OodbenchError(f"{err.strerror or err} ({getattr(err, 'filename', '') or 'no file'}); "
                                             "free space or fix permissions, then rerun (finished cells are kept)"),
                out)
    except OodbenchError as err:
        _failed(cfg, multirun, err, out)


def _figures(df: Any, out: Path) -> None:
    """``figures=true``: a score histogram + ROC curve per row, from the scores the run wrote (or the stored ones)."""
    import numpy as np
    import pandas as pd

    from oodbench.figures import score_figures

    df = pd.DataFrame(df)
    if not (out / "scores.npz").is_file():
        print("figures: no per-image scores for this cell (rerun=true recomputes them)")
        return
    with np.load(out / "scores.npz") as z:
        paths = score_figures(df, {k: z[k] for k in z.files}, out / "figures")
    print(f"figures: {len(paths)} in {out / 'figures'}")


def _failed(cfg: DictConfig, multirun: bool, err: OodbenchError, out: Path) -> None:
    """One line and exit 2; in a sweep the cell is recorded and the others go on (the sweep exits 2 at its end)."""
    if not multirun:
        fail(str(err))
    print(f"oodbench: cell failed, sweep goes on: {err}", file=sys.stderr)
    import pandas as pd

    from oodbench.store import write_csv

    write_csv(pd.DataFrame([{"run_name": cfg.get("run_name"), "detector": cfg.get("detector_name"),
                             "status": "failed", "message": str(err)}]), out / "failed.csv")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _app(cfg: DictConfig) -> None:
    main(cfg)


__all__ = ["entry", "fail", "format_table", "main", "start_dir"]
