"""oodbench entry point: ``python run.py detector=energy id=cifar10`` (Hydra; ``-m`` for sweeps). The same program as
the ``oodbench`` command and ``python -m oodbench`` (:func:`oodbench.cli.entry`)."""

from oodbench.cli import entry

if __name__ == "__main__":
    entry()
