"""Decode workers overlap the forward without changing a number: the features extracted from a real image folder
with ``num_workers=2`` equal those of the main-process path (``num_workers=0``), batch for batch, in order."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch
from torch import nn

from oodbench.data.base import ImageSet
from oodbench.data.lazy import FolderImages, default_threads
from oodbench.runner.forward import extract, iter_batches, resolve_workers

N_FILES = 10


class _Tiny(nn.Module):
    """A seeded conv net with the ``features`` / ``head`` split of oodbench's classifiers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)


@pytest.fixture(scope="module")
def isun_folder(shared_data, tmp_path_factory):
    """The first ``N_FILES`` real iSUN JPEGs of the published archive, written out as an image folder."""
    archive = shared_data / "ood" / "iSUN.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} not found")
    root = tmp_path_factory.mktemp("isun")
    with tarfile.open(archive, "r:gz") as tar:
        n = 0
        for m in tar:
            if m.isfile() and m.name.lower().endswith(".jpeg"):
                (root / f"{n:03d}.jpeg").write_bytes(tar.extractfile(m).read())
                n += 1
                if n == N_FILES:
                    break
    return sorted(root.iterdir())


def test_workers_give_identical_features(isun_folder):
    images = FolderImages(isun_folder, size=32, resize=32, threads=1)
    data = ImageSet("isun_folder", images, None, "test folder", len(images), np.arange(len(images)), "test")
    model = _Tiny().eval()
    serial = extract(model, data, torch.device("cpu"), batch_size=4, num_workers=0)
    workers = extract(model, data, torch.device("cpu"), batch_size=4, num_workers=2)
    assert serial.features.shape == (N_FILES, 8)
    assert torch.equal(serial.features, workers.features) and torch.equal(serial.logits, workers.logits)
    pixels = [b for b in iter_batches(data, 4, num_workers=2)]
    assert [len(b) for b in pixels] == [4, 4, 2]
    assert torch.equal(torch.cat(pixels), torch.cat(list(data.batches(4))))  # the same tensors, in order


def test_auto_workers_only_for_sets_decoded_on_the_fly(isun_folder):
    lazy = FolderImages(isun_folder, size=32, resize=32)
    folder = ImageSet("f", lazy, None, "t", len(lazy), np.arange(len(lazy)), "t")
    array = ImageSet("a", np.zeros((4, 32, 32, 3), np.uint8), None, "t", 4, np.arange(4), "t")
    assert resolve_workers("auto", array) == 0
    cpus, threads = default_threads(), torch.get_num_threads()
    assert resolve_workers("auto", folder, torch.device("cpu")) == min(4, max(0, cpus - threads))  # spare CPUs only
    assert resolve_workers("auto", folder, torch.device("cuda")) == min(4, cpus)  # the forward is on the GPU
    assert resolve_workers(3, array) == 3
    with pytest.raises(ValueError):
        resolve_workers(-1, array)
