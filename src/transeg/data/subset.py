"""A seeded fraction of a dataset, for training on less data (Segmenter, Table 5).

The images kept are the first ``round(fraction * N)`` (at least one) of a permutation of the N
indices drawn by ``numpy.random.default_rng(seed)``, taken back in the dataset's order. The
permutation depends only on ``seed`` and N, so one seed gives nested subsets: the images of a
smaller fraction are among those of every larger one.
"""

from __future__ import annotations

import copy

import numpy as np

from transeg.data.datasets import SegmentationDataset
from transeg.errors import TransegError


def subset_indices(count: int, fraction: float, seed: int = 0) -> list[int]:
    """The increasing indices, out of ``count``, that a ``fraction`` in (0, 1] keeps with ``seed``."""
    if not 0 < fraction <= 1:
        raise TransegError(f"data.subset must be a fraction in (0, 1], got {fraction!r}")
    if count < 1:
        raise TransegError("data.subset: the dataset has no images to take a fraction of")
    keep = max(1, round(fraction * count))
    return sorted(np.random.default_rng(seed).permutation(count)[:keep].tolist())


def subset(dataset: SegmentationDataset, fraction: float, seed: int = 0) -> SegmentationDataset:
    """A copy of ``dataset`` holding only the samples ``subset_indices`` keeps (classes, palette,
    label table and transform shared)."""
    part = copy.copy(dataset)
    part.samples = [dataset.samples[i] for i in subset_indices(len(dataset), fraction, seed)]
    part.name = f"{dataset.name}[subset {fraction:g}, seed {seed}]"
    return part
