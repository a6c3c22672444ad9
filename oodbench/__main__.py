"""``python -m oodbench ...``: the same program as the ``oodbench`` command and ``run.py``."""

from oodbench.cli import entry

if __name__ == "__main__":
    entry()
