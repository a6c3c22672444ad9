"""``make tables``: rebuild every paper page from its spec and the stored rows (= ``oodbench tables``; see
:mod:`oodbench.tables.build`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's oodbench, not an installed one

from oodbench.tables.build import main  # noqa: E402

if __name__ == "__main__":
    main()
