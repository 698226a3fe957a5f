"""Class weights from a split's class frequencies, for ``class_weight: auto`` of the cross-entropy.

The formula is ENet's inverse-log weighting (Paszke et al. 2016): ``w_c = 1 / ln(1.02 + f_c)``,
``f_c`` the share of class c among the labelled pixels. Weights lie in (1/ln 2.02, 1/ln 1.02] =
(1.42, 50.5]: a class of half the pixels gets 1.9, one of 1 % gets 32, one never seen the maximum
(it never is a target, so its weight has no effect).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.progress import track

from transeg.data.datasets import SegmentationDataset

INVERSE_LOG_C = 1.02


def inverse_log_weights(class_pixels: Sequence[int]) -> list[float]:
    """(K,) pixel counts per class -> (K,) weights ``1 / ln(1.02 + share)`` (see the module docstring)."""
    counts = np.asarray(class_pixels, dtype=np.float64)
    share = counts / max(counts.sum(), 1.0)
    return [float(w) for w in 1.0 / np.log(INVERSE_LOG_C + share)]


def class_pixel_counts(dataset: SegmentationDataset, show_progress: bool = False) -> list[int]:
    """(K,) labelled pixels per class over every label map of ``dataset`` (after its label table)."""
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    indices = track(range(len(dataset)), description="class frequencies", disable=not show_progress)
    for index in indices:
        label = dataset.load_label(index)
        if label is not None:
            counts += np.bincount(label.ravel(), minlength=256)[: dataset.num_classes]
    return [int(c) for c in counts]
