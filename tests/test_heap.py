"""``oodbench.heap.pooled_heap``: freed activations stay on glibc's heap during a CPU pass and are given back after
it; the extracted numbers are bit-identical with and without it; ``OODBENCH_HEAP=system`` turns it off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from oodbench import heap
from oodbench.data.base import ImageSet
from oodbench.runner.forward import extract

glibc = pytest.mark.skipif(heap._glibc() is None, reason="glibc only")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024


@glibc
def test_freed_memory_stays_during_the_block_and_goes_back_after(monkeypatch) -> None:
    monkeypatch.delenv("OODBENCH_HEAP", raising=False)
    with heap.pooled_heap():
        before = _rss_mb()
        a = np.ones(200 << 17)  # 200 MB, above glibc's largest mmap threshold
        del a
        kept = _rss_mb() - before
    after = _rss_mb() - before
    assert kept > 150 and after < 50 and heap._depth == 0
    b = np.ones(200 << 17)  # outside the block glibc maps and unmaps it again, as before
    del b
    assert _rss_mb() - before < 50


def test_system_turns_it_off(monkeypatch) -> None:
    monkeypatch.setenv("OODBENCH_HEAP", "system")
    assert not heap.pooling_active()
    with heap.pooled_heap():
        assert heap._depth == 0  # nothing was set


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_extraction_is_bit_identical_with_and_without(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    data = ImageSet("noise", rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8), None, "test", 96, np.arange(96),
                    "noise:test")
    model = _Tiny().eval()
    got = {}
    for mode in ("system", "pooled"):
        monkeypatch.setenv("OODBENCH_HEAP", mode)
        got[mode] = extract(model, data, torch.device("cpu"), batch_size=32)
    assert torch.equal(got["system"].logits, got["pooled"].logits)
    assert torch.equal(got["system"].features, got["pooled"].features)
