"""``retained_heap``: a large block freed inside it is reused without page faults, and glibc's
defaults (a fresh mapping per large block) come back on leaving.

Each scenario runs in a fresh interpreter: the test process's heap holds whatever free blocks earlier
tests left, and glibc reuses a free block that fits whatever the options say."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transeg.engine.heap import heap_retention_available

pytestmark = pytest.mark.skipif(not heap_retention_available(), reason="glibc's mallopt only")

PAGES = 16384  # a 64 MiB tensor
ROOT = Path(__file__).resolve().parents[2]


def _faults_of_a_fresh_tensor() -> int:
    """Minor page faults taken by allocating and writing a 64 MiB tensor (freed on return)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(PAGES * 4096 // 4)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def printed_by_a_fresh_process(scenario: str) -> list[int]:
    """The integers ``scenario`` (Python source, ``fresh()`` counting the faults of a fresh 64 MiB
    tensor) prints, run in a new interpreter."""
    source = "from tests.engine.test_heap import _faults_of_a_fresh_tensor as fresh\n" + scenario
    out = subprocess.run([sys.executable, "-c", source], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    return [int(v) for v in out.split()]


def test_a_freed_large_block_is_reused_without_faults_inside_and_mapped_afresh_outside() -> None:
    before, kept, after = printed_by_a_fresh_process("""
from transeg.engine.heap import retained_heap
before = fresh()  # glibc's default: every large block is a new mapping
with retained_heap():
    for _ in range(3):  # the heap grows to fit (up to twice, by where the aligned blocks fall)
        fresh()
    kept = sum(fresh() for _ in range(3))
print(before, kept, fresh())
""")
    assert before > PAGES // 2 and kept < PAGES // 20 and after > PAGES // 2


def test_disabled_leaves_the_defaults() -> None:
    [faults] = printed_by_a_fresh_process("""
from transeg.engine.heap import retained_heap
with retained_heap(enabled=False):
    print(fresh())
""")
    assert faults > PAGES // 2
