"""``retained_heap``: a large block freed inside it is reused without page faults, and glibc's
defaults (a fresh mapping per large block) come back on leaving."""

from __future__ import annotations

import resource

import pytest
import torch

from transeg.engine.heap import heap_retention_available, retained_heap

pytestmark = pytest.mark.skipif(not heap_retention_available(), reason="glibc's mallopt only")

PAGES = 16384  # a 64 MiB tensor


def _faults_of_a_fresh_tensor() -> int:
    """Minor page faults taken by allocating and writing a 64 MiB tensor (freed on return)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(PAGES * 4096 // 4)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_a_freed_large_block_is_reused_without_faults_inside_and_mapped_afresh_outside() -> None:
    assert _faults_of_a_fresh_tensor() > PAGES // 2  # glibc's default: every large block is a new mapping
    with retained_heap():
        for _ in range(3):  # the heap grows to fit (up to twice, by where the aligned blocks fall)
            _faults_of_a_fresh_tensor()
        assert sum(_faults_of_a_fresh_tensor() for _ in range(3)) < PAGES // 20
    assert _faults_of_a_fresh_tensor() > PAGES // 2


def test_disabled_leaves_the_defaults() -> None:
    with retained_heap(enabled=False):
        assert _faults_of_a_fresh_tensor() > PAGES // 2
