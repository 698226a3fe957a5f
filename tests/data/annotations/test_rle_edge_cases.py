"""COCO RLE edge cases against pycocotools (empty, full, 1x1, long runs, negative deltas): the same counts
string, decoding to the same mask."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from transeg.data.annotations.rle import encode_mask, mask_to_counts

# pycocotools (2.0.x) decodes through a NumPy 1 array interface
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    masks = [np.zeros((5, 7), bool), np.ones((5, 7), bool), np.eye(9, 13, dtype=bool), np.zeros((1, 1), bool)]
    masks += [rng.random((int(rng.integers(1, 60)), int(rng.integers(1, 60)))) < p for p in (0.02, 0.3, 0.5, 0.97)]
    blocks = np.zeros((300, 400), bool)  # long runs, and runs much shorter than the one two before (negative deltas)
    blocks[:, 50:300] = True
    blocks[100:101, 310:311] = True
    masks.append(blocks)
    return masks


@pytest.mark.parametrize("mask", _masks(), ids=lambda m: f"{m.shape}-{int(m.sum())}")
def test_counts_are_those_of_pycocotools(mask):
    ours = encode_mask(mask)
    theirs = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert ours["size"] == list(theirs["size"])
    assert ours["counts"] == theirs["counts"].decode("ascii")
    decoded = coco_mask.decode({"size": ours["size"], "counts": ours["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), mask)


def test_runs_start_with_the_zeros_in_column_major_order():
    mask = np.array([[1, 0], [1, 1]], bool)  # column-major: 1 1 0 1
    assert mask_to_counts(mask) == [0, 2, 1, 1]
    assert sum(mask_to_counts(~mask)) == 4
