"""oodbench: reproduce the classic OOD-detection papers' tables from one config-driven harness.

``oodbench.evaluate(model, id=..., detectors=[...], ood=[...])`` is the Python API (:mod:`oodbench.api`); the command
line is ``oodbench ...`` / ``python -m oodbench ...`` / ``python run.py ...``. Importing the package is cheap: the API
(and torch) load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Results", "evaluate", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "Results", "as_image_set"):
        from oodbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'oodbench' has no attribute {name!r}")
