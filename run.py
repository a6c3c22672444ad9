"""oodbench entry point: ``python run.py detector=energy id=cifar10`` (Hydra; ``-m`` for sweeps)."""

import sys

import hydra
from omegaconf import DictConfig

from oodbench.cli import check_choices, main


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def app(cfg: DictConfig) -> None:
    main(cfg)


if __name__ == "__main__":
    check_choices(sys.argv[1:])
    app()
