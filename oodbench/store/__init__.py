"""The result store: what identifies a result, where its rows and per-image scores live, how they are read back.

One room for results, between the runner (which writes through it) and the tables, the sweep summary and the
Python API (which read through it):

* :mod:`~oodbench.store.identity` — a cell's run name, derived from the resolved config minus the fields declared
  not to change a number (:data:`~oodbench.store.identity.NOT_IDENTITY`);
* :mod:`~oodbench.store.inputs` — the inputs id: checkpoint sha256, each image set's content id, exact indices and
  count, and every other file a detector reads;
* :mod:`~oodbench.store.rows` — the one reader and validator of row files, atomic CSV writes;
* :class:`Store` — paths of rows and kept scores, resolved once, and the query API (``rows``, ``cell``, ``load``).
"""

from oodbench.store.hashing import stable_hash
from oodbench.store.identity import NOT_IDENTITY, config_identity, derive_run_name
from oodbench.store.inputs import RESULT_FORMAT, identity_columns, inputs_id, inputs_identity, set_identity
from oodbench.store.rows import METRICS, CorruptRows, read_records, read_rows, write_csv, write_records
from oodbench.store.store import Store

__all__ = [
    "METRICS", "NOT_IDENTITY", "RESULT_FORMAT", "CorruptRows", "Store", "config_identity", "derive_run_name",
    "identity_columns", "inputs_id", "inputs_identity", "read_records", "read_rows", "set_identity", "stable_hash",
    "write_csv", "write_records",
]
