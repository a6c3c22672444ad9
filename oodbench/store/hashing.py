"""Stable digests of plain data (config trees, identities): sorted-key JSON, sha256."""

from __future__ import annotations

import hashlib
import json


def stable_hash(obj: object, n: int = 10) -> str:
    """The first ``n`` hex digits of the sha256 of ``obj`` as sorted-key JSON (``str`` for anything else)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]
