"""Keep a CPU forward's activations on glibc's heap instead of fresh ``mmap`` pages.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a new ``mmap`` and returns it with
``munmap`` on free. A CPU forward of DenseNet-BC-100 at batch 128 allocates and frees activations of ~100 MB per
layer, so the kernel maps, zero-fills and unmaps them again and again: on the 2-CPU machine of ``results/bench.md``
half the forward's CPU time was system time. :func:`pooled_heap` turns ``mmap`` off and heap trimming off for the
duration of a pass (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, …)``), so freed activations are reused
from the heap, then restores glibc's defaults and gives the memory back (``malloc_trim(0)``).

It changes where bytes live, never what is computed: the scores are bit-identical (``results/bench.md``,
section 5, measures both). The cost is a higher peak resident size during the pass (DenseNet-BC-100, batch 128: 2.1 GB
instead of 1.2 GB). ``OODBENCH_HEAP=system`` leaves glibc alone; other C libraries (macOS, musl) are left alone too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator
from functools import cache

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's malloc.h
_DEFAULT_TRIM, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
POOLED_TRIM_THRESHOLD = 2**31 - 1  # bytes of free heap glibc may keep during a pass (no trimming in practice)
_depth = 0


@cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def pooling_active() -> bool:
    """Whether :func:`pooled_heap` changes anything here (glibc, and ``OODBENCH_HEAP`` is not ``system``)."""
    return os.environ.get("OODBENCH_HEAP", "pooled") != "system" and _glibc() is not None


@contextlib.contextmanager
def pooled_heap(on: bool = True) -> Iterator[None]:
    """Within the block, glibc keeps freed memory on its heap (see the module docstring); ``on=False`` (e.g. the
    forward runs on a GPU) or :func:`pooling_active` false: a no-op. Re-entrant."""
    global _depth
    libc = _glibc() if on and pooling_active() else None
    if libc is None:
        yield
        return
    if _depth == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, POOLED_TRIM_THRESHOLD)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
            libc.malloc_trim(0)
