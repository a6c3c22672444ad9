"""One-off, rerunnable: rename stored rows from the old run names (a hash of id / protocol / ood / detector /
checkpoint only) to the store's identity-derived names (:func:`oodbench.store.derive_run_name`: the whole resolved
config minus the declared non-identity fields).

For every cell of every paper spec: compose it with Hydra as ``run.py`` does, compute both names, and where the
old-named file exists and the new one does not, rename it (``git mv`` when tracked) and rewrite its ``run_name``
column. Kept per-image scores in the cache are renamed too. Significance and chance-flag records whose digest matched
the rows under their old names get the digest of the same rows under the new names (their numbers are unchanged:
they were computed from the same scores). Prints what it did; changes nothing on a second run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from oodbench.paths import CONFIG_DIR, REPO_ROOT, resolve  # noqa: E402
from oodbench.store import derive_run_name, read_rows, stable_hash, write_csv  # noqa: E402
from oodbench.tables import chance, engine, layout, significance  # noqa: E402
from oodbench.tables.cells import expand  # noqa: E402


def legacy_run_name(cfg) -> str:  # noqa: ANN001
    """The run name before the store layer (oodbench.cli.derive_run_name at commit 1606567)."""
    identity = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("id", "protocol", "ood")}
    identity.update(detector=OmegaConf.to_container(cfg.detector, resolve=True), checkpoint=str(cfg.arch.checkpoint))
    if cfg.get("tf32"):
        identity["tf32"] = True
    ckpt = Path(str(cfg.arch.checkpoint)).stem
    return f"{cfg.id.name}-{ckpt}-{cfg.detector_name}-{cfg.protocol.name}-{stable_hash(identity, 8)}"


def renames() -> dict[tuple[str, str], str]:
    """(result_set, old name) → new name, for every composable cell of every spec."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import oodbench.conf  # noqa: F401

    out: dict[tuple[str, str], str] = {}
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for spec in engine.spec_names():
            for cell in expand(engine.load_spec(spec).get("cells") or []):
                try:
                    cfg = compose("config", overrides=[f"+paper={spec}", *cell], return_hydra_config=True)
                    HydraConfig.instance().set_config(cfg)
                    old, new = legacy_run_name(cfg), derive_run_name(cfg)
                except Exception:  # noqa: BLE001 — a cell that cannot be composed has no rows
                    continue
                if cfg.result_set and old != new:
                    out[str(cfg.result_set), old] = new
    return out


def _git_mv(src: Path, dst: Path) -> None:
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(src)], cwd=REPO_ROOT,
                             capture_output=True).returncode == 0
    if tracked:
        subprocess.run(["git", "mv", str(src), str(dst)], cwd=REPO_ROOT, check=True)
    else:
        src.rename(dst)


def main() -> None:
    results, cache = resolve("results"), resolve("cache")
    mapping = renames()
    pages = {name: engine.load_spec(name) for name in engine.spec_names()}
    moved: dict[str, str] = {}
    for (store, old), new in sorted(mapping.items()):
        src = results / "runs" / store / f"{old}.csv"
        dst = results / "runs" / store / f"{new}.csv"
        if not src.is_file() or dst.exists():
            continue
        df = read_rows(src)
        ids = set(df.get("inputs_id", pd.Series(dtype=str)).astype(str))
        _git_mv(src, dst)
        df["run_name"] = new
        write_csv(df, dst)
        for inputs in ids:
            kept = cache / "scores" / f"{old}-{inputs}.npz"
            if kept.is_file():
                kept.rename(cache / "scores" / f"{new}-{inputs}.npz")
        moved[old] = new
        print(f"{store}: {old} -> {new}")
    if not moved:
        print("nothing to rename")
        return
    back = {v: k for k, v in moved.items()}
    for name, spec in pages.items():
        _redigest(name, spec, results, back)
    print(f"renamed {len(moved)} cells")


def _redigest(name: str, spec: dict, results: Path, back: dict[str, str]) -> None:
    """Records digested from rows now renamed: the digest of the same rows under their new names."""
    rows = engine.spec_rows(name, spec, results)
    if rows.empty:
        return
    old_rows = rows.assign(run_name=rows.run_name.map(lambda r: back.get(r, r)))
    sig = significance.path(results, name)
    if sig.is_file():
        records = pd.read_csv(sig)
        for block in significance.blocks(spec):
            dets = significance._detectors(block, rows)
            for ckpt in block["checkpoints"]:
                old_d, new_d = (significance.digest(r[(r.checkpoint == ckpt) & (r.status == "ok")
                                                      & r.detector.isin(dets)]) for r in (old_rows, rows))
                hit = (records.checkpoint == ckpt) & (records.digest == old_d)
                records.loc[hit, "digest"] = new_d
        write_csv(records, sig)
    target = chance.path(results, name)
    if target.is_file():
        df = engine.build(name, results)[0]
        cmp = layout.compared(df)
        if not cmp.empty and "run_name" in cmp.columns:
            rec = pd.read_csv(target)
            old_cmp = cmp.assign(run_name=cmp.run_name.map(lambda r: back.get(r, r)))
            if rec.digest.iloc[0] == chance.digest(old_cmp):
                rec["digest"] = chance.digest(cmp)
                write_csv(rec, target)


if __name__ == "__main__":
    main()
