"""Iteration-based, resumable, distributed sampling of training batches.

Draw ``g`` (the g-th image of the run, counted over all processes) is image
``perm_e[g % n]`` with ``e = g // n`` and ``perm_e`` a permutation seeded by ``(seed, e)``; its
augmentation generator is seeded by ``(seed, g)``. So what a run sees depends only on the seed and
the iteration, never on worker count, process count or where it was resumed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from transeg.data.datasets import SegmentationDataset
from transeg.errors import TransegError


class IterationBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for iterations ``start..stop-1`` and each of ``micro_batches`` per iteration, this
    process's share of the global batch as ``(dataset index, draw number)`` pairs."""

    def __init__(self, dataset_size: int, global_batch: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1, micro_batches: int = 1) -> None:
        if global_batch % (world_size * micro_batches):
            raise ValueError(f"global batch {global_batch} does not split over {world_size} processes "
                             f"x {micro_batches} micro-batches")
        self.n, self.global_batch, self.seed = dataset_size, global_batch, seed
        self.start, self.stop = start, stop
        self.rank, self.world_size, self.micro_batches = rank, world_size, micro_batches
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return (self.stop - self.start) * self.micro_batches

    def _index(self, draw: int) -> int:
        epoch = draw // self.n
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return int(self._perms[epoch][draw % self.n])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_process = self.global_batch // self.world_size
        per_micro = per_process // self.micro_batches
        for iteration in range(self.start, self.stop):
            first = iteration * self.global_batch + self.rank * per_process
            for m in range(self.micro_batches):
                draws = range(first + m * per_micro, first + (m + 1) * per_micro)
                yield [(self._index(d), d) for d in draws]


class TrainStream(Dataset):
    """``stream[(index, draw)]`` = sample ``index`` augmented with a generator seeded by (seed, draw).

    ``on_bad_sample="skip"`` replaces an unreadable or invalid sample by the next good one (the
    same one on every run), warning once per file and loader process; "error" stops on it.
    """

    def __init__(self, dataset: SegmentationDataset, transform: Any, seed: int, on_bad_sample: str = "error") -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self.on_bad_sample = on_bad_sample
        self._reported: set[str] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, draw = key
        for offset in range(len(self.dataset)):
            try:
                sample = self.dataset.load((index + offset) % len(self.dataset))
            except TransegError as exc:
                if self.on_bad_sample == "error":
                    raise
                if str(exc) not in self._reported:
                    self._reported.add(str(exc))
                    warnings.warn(f"skipping bad sample: {exc}", stacklevel=2)
                continue
            return self.transform(sample, np.random.default_rng([self.seed, draw]))
        raise TransegError(f"{self.dataset.name}: no sample could be read")


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (B, 3, H, W) and labels (B, H, W); keep the paths as a list."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.stack([s["label"] for s in samples]),
        "path": [s["path"] for s in samples],
    }
