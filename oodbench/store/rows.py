"""Row files: the one reader and validator (the runner's resume check, the tables and the sweep summary all use it),
and atomic CSV writes.

A row file is a CSV with one row per OOD set of a cell. :func:`read_records` rejects, with what is wrong, a file that
is binary, cut (no final line end), lacks the ``status`` / ``ood_dataset`` columns, or holds a non-number, an empty
value or a non-finite value in a metric column of an ``ok`` row; :func:`problem` adds what serving a stored cell
needs: one row per configured OOD set, the same inputs id. The reader is the standard library's ``csv``, so a stored
cell is served without importing pandas; :func:`read_rows` gives the same rows as a DataFrame for the tables.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodbench.data.files import atomic_write_bytes
from oodbench.errors import OodbenchError
from oodbench.store.inputs import inputs_id

if TYPE_CHECKING:
    import pandas as pd

METRICS = ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_error")
NUMERIC = ("n_id", "n_ood", "id_acc", *METRICS)
REQUIRED = ("n_id", "n_ood", "fpr95", "auroc")  # never empty in an ok row


class CorruptRows(Exception):
    """A stored row file that cannot be read as rows: ``args = (what is wrong, path)``."""


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_records(path: Path) -> list[dict[str, str]]:
    """One row file as ``{column: text}`` records, validated (module docstring); :class:`CorruptRows` naming what is
    wrong otherwise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CorruptRows(f"unreadable ({err.strerror or err})", path) from None
    if b"\x00" in raw:
        raise CorruptRows("binary data, not a CSV", path)
    try:
        text = raw.decode("utf-8")
        reader = csv.DictReader(io.StringIO(text))
        records = list(reader)
        columns = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as err:
        raise CorruptRows(f"not a readable CSV ({str(err).splitlines()[0][:80]})", path) from None
    if not columns:
        raise CorruptRows("not a readable CSV (empty)", path)
    if not text.endswith("\n"):
        raise CorruptRows("truncated (the last row has no line end)", path)
    if "status" not in columns or "ood_dataset" not in columns:
        raise CorruptRows("not a result file (no status / ood_dataset column)", path)
    if any(None in r or any(v is None for v in r.values()) for r in records):
        raise CorruptRows("not a readable CSV (a row has another number of fields than the header)", path)
    for r in (r for r in records if r["status"] == "ok"):
        for col in (c for c in NUMERIC if c in r):
            value = _number(r[col]) if r[col] != "" else None
            if (r[col] != "" and value is None) or (col in REQUIRED and r[col] == ""):
                raise CorruptRows(f"column {col!r} holds a non-number or is empty in an ok row", path)
            if col in METRICS and value is not None and not math.isfinite(value):
                raise CorruptRows(f"column {col!r} holds a non-finite value in an ok row", path)
    return records


def read_rows(path: Path) -> pd.DataFrame:
    """One row file as a DataFrame, after :func:`read_records` validated it."""
    import pandas as pd

    read_records(path)
    return pd.read_csv(path)


def problem(records: list[dict[str, Any]], ood_names: list[str], identity: dict[str, Any]) -> str | None:
    """Why validated rows cannot be served for a cell of ``ood_names`` computed from ``identity`` (None: they can)."""
    if sorted(str(r["ood_dataset"]) for r in records) != sorted(ood_names):
        return f"incomplete: {len(records)} rows for {len(ood_names)} OOD sets"
    ok = [r for r in records if r["status"] == "ok"]
    if records and "inputs_id" in records[0]:
        if {str(r["inputs_id"]) for r in records} != {inputs_id(identity)}:
            return "its inputs changed (checkpoint, images, subset or a file a detector reads)"
    elif identity.get("detector_inputs"):  # rows of that age never read such a file
        return f"written without input ids, before the detector read {', '.join(identity['detector_inputs'])}"
    elif not _legacy_matches(ok, identity):
        return "written without input ids, and its checkpoint sha256 or image counts differ"
    return None


def _legacy_matches(ok: list[dict[str, Any]], identity: dict[str, Any]) -> bool:
    """Rows stored before input ids (result format 1): the checkpoint sha256 and every image count must match (the
    archives and exact subsets are sha256-checked when loaded, so equal counts mean equal images)."""
    try:
        return bool(ok) and all(
            r["checkpoint_sha256"] == identity["checkpoint"] and int(float(r["n_id"])) == identity["id"]["n"]
            and identity["ood"].get(r["ood_dataset"]) is not None
            and int(float(r["n_ood"])) == identity["ood"][r["ood_dataset"]]["n"] for r in ok)
    except (KeyError, TypeError, ValueError):
        return False


def write_records(records: list[dict[str, Any]], path: Path) -> None:
    """Records (e.g. served rows) to ``path`` as a CSV, atomically, with the columns of the first record."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(records[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(records)

    try:
        atomic_write_bytes(Path(path), write)
    except OSError as err:
        raise OodbenchError(f"cannot write results to {path} ({err.strerror}); choose a writable directory") from None


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` atomically (mode 0644); one clear line if the directory is not writable."""
    try:
        atomic_write_bytes(Path(path), lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))
    except OSError as err:
        raise OodbenchError(
            f"cannot write results to {path} ({err.strerror}); set paths.results or OODBENCH_RESULTS to a writable dir"
        ) from None
