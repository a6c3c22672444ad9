"""Row files: the one reader and validator (the runner's resume check, the tables and the sweep summary all use it),
and atomic CSV writes.

A row file is a CSV with one row per OOD set of a cell. :func:`read_rows` rejects, with what is wrong, a file that
is binary, cut (no final line end), lacks the ``status`` column, or holds a non-number or an empty value in a metric
column of an ``ok`` row; :func:`problem` adds what serving a stored cell needs: one row per configured OOD set, the
same inputs id, finite metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oodbench.data.files import atomic_write_bytes
from oodbench.errors import OodbenchError
from oodbench.store.inputs import inputs_id

METRICS = ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_error")
NUMERIC = ("n_id", "n_ood", "id_acc", *METRICS)
REQUIRED = ("n_id", "n_ood", "fpr95", "auroc")  # never empty in an ok row
log = logging.getLogger("oodbench")


class CorruptRows(Exception):
    """A stored row file that cannot be read as rows: ``args = (what is wrong, path)``."""


def read_rows(path: Path) -> pd.DataFrame:
    """One row file, validated (module docstring); :class:`CorruptRows` naming what is wrong otherwise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CorruptRows(f"unreadable ({err.strerror or err})", path) from None
    if b"\x00" in raw:
        raise CorruptRows("binary data, not a CSV", path)
    try:
        text = raw.decode("utf-8")
        df = pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise CorruptRows(f"not a readable CSV ({str(err).splitlines()[0][:80]})", path) from None
    if not text.endswith("\n"):
        raise CorruptRows("truncated (the last row has no line end)", path)
    if "status" not in df.columns or "ood_dataset" not in df.columns:
        raise CorruptRows("not a result file (no status / ood_dataset column)", path)
    ok = df.status == "ok"
    for col in (c for c in NUMERIC if c in df.columns):
        values = pd.to_numeric(df.loc[ok, col], errors="coerce")
        bad = values.isna() & df.loc[ok, col].notna()
        if bad.any() or (col in REQUIRED and df.loc[ok, col].isna().any()):
            raise CorruptRows(f"column {col!r} holds a non-number or is empty in an ok row", path)
        if col in METRICS and not np.isfinite(values.dropna().to_numpy(dtype=np.float64)).all():
            raise CorruptRows(f"column {col!r} holds a non-finite value in an ok row", path)
    return df


def problem(df: pd.DataFrame, ood_names: list[str], identity: dict[str, Any]) -> str | None:
    """Why validated rows ``df`` cannot be served for a cell of ``ood_names`` computed from ``identity`` (None: they
    can)."""
    if sorted(df.ood_dataset.astype(str)) != sorted(ood_names):
        return f"incomplete: {len(df)} rows for {len(ood_names)} OOD sets"
    ok = df[df.status == "ok"]
    if "inputs_id" in df.columns:
        if set(df.inputs_id.astype(str)) != {inputs_id(identity)}:
            return "its inputs changed (checkpoint, images, subset or a file a detector reads)"
    elif identity.get("detector_inputs"):  # rows of that age never read such a file
        return f"written without input ids, before the detector read {', '.join(identity['detector_inputs'])}"
    elif not _legacy_matches(ok, identity):
        return "written without input ids, and its checkpoint sha256 or image counts differ"
    return None


def _legacy_matches(ok: pd.DataFrame, identity: dict[str, Any]) -> bool:
    """Rows stored before input ids (result format 1): the checkpoint sha256 and every image count must match (the
    archives and exact subsets are sha256-checked when loaded, so equal counts mean equal images)."""
    try:
        return bool(len(ok)) and all(
            r.checkpoint_sha256 == identity["checkpoint"] and int(r.n_id) == identity["id"]["n"]
            and identity["ood"].get(r.ood_dataset) is not None and int(r.n_ood) == identity["ood"][r.ood_dataset]["n"]
            for r in ok.itertuples())
    except (AttributeError, TypeError, ValueError):
        return False


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` atomically (mode 0644); one clear line if the directory is not writable."""
    try:
        atomic_write_bytes(Path(path), lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))
    except OSError as err:
        raise OodbenchError(
            f"cannot write results to {path} ({err.strerror}); set paths.results or OODBENCH_RESULTS to a writable dir"
        ) from None
