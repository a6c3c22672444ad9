"""oodbench trainer: ``python train.py method=energy_ft id=cifar10 arch=densenet100`` (Hydra).

Methods: classifier | energy_ft | oe | mcd (configs/train/method/). Writes epoch checkpoints, log.csv and
final.pt under ``out`` and prints the ``run.py`` line that evaluates the result.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from oodbench.errors import OodbenchError

METHODS = Path(__file__).resolve().parent / "oodbench" / "conf" / "train" / "method"


def fail(message: str) -> None:
    print(f"oodbench: error: {message}", file=sys.stderr)
    raise SystemExit(2)


@hydra.main(version_base="1.3", config_path="oodbench/conf/train", config_name="train")
def app(cfg: DictConfig) -> None:
    from oodbench.train import main

    try:
        main(cfg)
    except OodbenchError as err:
        fail(str(err))


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        key, _, value = arg.partition("=")
        choices = sorted(p.stem for p in METHODS.glob("*.yaml"))
        if key == "method" and value not in choices:
            fail(f"unknown method {value!r}; choose from: {', '.join(choices)}")
    app()
