"""Keeping freed tensor memory in the process heap while training on the CPU.

glibc serves every block of 128 KiB or more (32 MiB at most, once it has adapted) from a fresh
``mmap`` and hands it back to the kernel when freed. A training step allocates and frees the same
large activations and gradients every iteration, so each one is page-faulted and zeroed again:
writing a fresh 100 MB map costs several times as much as overwriting a reused one. Inside
:func:`retained_heap` large blocks come from the heap and freed ones stay there for the next step
(``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` 1 GiB): training steps are faster and the peak resident
set somewhat larger (both measured in docs/benchmarks.md). Leaving restores glibc's defaults and
trims the heap. Elsewhere than glibc it changes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import sys
from collections.abc import Iterator
from functools import cache

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_MAX = 65536
ADAPTED_MMAP_THRESHOLD = 32 << 20  # where glibc's own threshold ends once a 32 MiB block was freed
RETAINED_TRIM_THRESHOLD = 1 << 30


@cache
def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (its ``mallopt`` and ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def heap_retention_available() -> bool:
    return glibc() is not None


@contextlib.contextmanager
def retained_heap(enabled: bool = True) -> Iterator[None]:
    """Within the block, freed memory stays in this process's heap for reuse (glibc only)."""
    libc = glibc() if enabled else None
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, RETAINED_TRIM_THRESHOLD)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
