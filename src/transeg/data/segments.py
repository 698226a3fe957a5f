"""Connected segments of a label map: the connected components of pixels sharing one class value.

Each maximal horizontal run of equal values is a node; runs of the same value that touch across
two rows (4-connectivity: one pixel above the other; 8-connectivity: also diagonally) are joined by
a union-find done in whole-array steps (hook every edge's two roots to the smaller, then compress
the pointers until each node points at its root), which ends when every edge joins one root.
Pixels equal to ``ignore_index`` belong to no segment.
"""

from __future__ import annotations

import numpy as np

from transeg.errors import TransegError

CONNECTIVITIES = (4, 8)


def _roots(count: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(count,) root of each node given the edges a[i]-b[i]; each root is its component's smallest node."""
    parent = np.arange(count)
    while True:
        ra, rb = parent[a], parent[b]
        if np.array_equal(ra, rb):
            return parent
        low = np.minimum(ra, rb)
        np.minimum.at(parent, ra, low)
        np.minimum.at(parent, rb, low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped


def label_segments(label: np.ndarray, ignore_index: int = 255, connectivity: int = 4) -> tuple[np.ndarray, int]:
    """(H, W) integer label map -> ((H, W) int64 segment ids, S): ids 0 … S-1 number the connected
    components of equal-valued pixels in raster order of their first pixel; -1 at ``ignore_index``."""
    if connectivity not in CONNECTIVITIES:
        raise TransegError(f"connectivity must be 4 or 8, got {connectivity!r}")
    label = np.asarray(label)
    if label.ndim != 2:
        raise TransegError(f"a label map must be (H, W), got shape {label.shape}")
    valid = label != ignore_index
    starts = valid.copy()
    starts[:, 1:] &= label[:, 1:] != label[:, :-1]
    run = (np.cumsum(starts.ravel()) - 1).reshape(label.shape)
    count = int(starts.sum())
    if count == 0:
        return np.full(label.shape, -1, np.int64), 0
    shifts = [(slice(None), slice(None))]  # (columns of the upper row, columns of the lower row)
    if connectivity == 8:
        shifts += [(slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))]
    a_parts, b_parts = [], []
    for upper, lower in shifts:
        top, bottom = label[:-1, upper], label[1:, lower]
        joined = valid[:-1, upper] & valid[1:, lower] & (top == bottom)
        a_parts.append(run[:-1, upper][joined])
        b_parts.append(run[1:, lower][joined])
    edges = np.unique(np.concatenate(a_parts) * count + np.concatenate(b_parts))  # each pair of runs once
    roots = _roots(count, edges // count, edges % count)
    _, ids = np.unique(roots, return_inverse=True)  # roots are each component's first run: raster order
    return np.where(valid, ids.reshape(-1)[run], -1).astype(np.int64), int(ids.max()) + 1
