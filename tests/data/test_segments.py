"""Connected segments of a label map (transeg.data.segments) on hand-drawn maps and against a BFS."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from transeg.data.segments import label_segments
from transeg.errors import TransegError

HAND = np.array([[0, 0, 1, 1],
                 [0, 1, 1, 255],
                 [2, 2, 0, 0],
                 [255, 2, 0, 1]])


def bfs_segments(label: np.ndarray, ignore: int, connectivity: int) -> np.ndarray:
    """The reference: flood fill from each unvisited pixel in raster order."""
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    h, w = label.shape
    out = np.full((h, w), -1)
    count = 0
    for start in np.ndindex(h, w):
        if label[start] == ignore or out[start] >= 0:
            continue
        out[start] = count
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for dy, dx in steps:
                ny, nx = y + dy, x + dx
                if 0 <= ny < h and 0 <= nx < w and out[ny, nx] < 0 and label[ny, nx] == label[start]:
                    out[ny, nx] = count
                    queue.append((ny, nx))
        count += 1
    return out


def test_hand_drawn_map_in_raster_order():
    segments, count = label_segments(HAND)
    assert count == 5
    assert segments.tolist() == [[0, 0, 1, 1],
                                 [0, 1, 1, -1],
                                 [2, 2, 3, 3],
                                 [-1, 2, 3, 4]]


def test_diagonal_pixels_join_only_with_8_connectivity():
    diagonal = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert label_segments(diagonal, connectivity=4)[1] == 5  # three lone 1s, two L-shaped runs of 0s
    segments, count = label_segments(diagonal, connectivity=8)
    assert count == 2
    assert segments.tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]


@pytest.mark.parametrize("connectivity", [4, 8])
def test_matches_a_flood_fill_on_random_maps(connectivity):
    rng = np.random.default_rng(connectivity)
    for _ in range(50):
        h, w = rng.integers(1, 14, size=2)
        label = rng.integers(0, 3, size=(h, w))
        label[rng.random((h, w)) < 0.15] = 255
        segments, count = label_segments(label, connectivity=connectivity)
        expected = bfs_segments(label, 255, connectivity)
        assert count == expected.max() + 1
        np.testing.assert_array_equal(segments, expected)


def test_a_spiral_needs_many_merges():
    spiral = np.zeros((9, 9), int)  # a one-pixel wall of 1s winding inwards; the 0s form one corridor
    spiral[1, 1:8] = spiral[1:8, 7] = spiral[7, 1:8] = spiral[3:8, 1] = spiral[3, 1:6] = spiral[3:6, 5] = 1
    segments, count = label_segments(spiral)
    np.testing.assert_array_equal(segments, bfs_segments(spiral, 255, 4))
    assert count == len(np.unique(segments))


def test_all_ignored_and_bad_arguments():
    segments, count = label_segments(np.full((2, 3), 255))
    assert count == 0 and (segments == -1).all()
    with pytest.raises(TransegError, match="connectivity must be 4 or 8, got 6"):
        label_segments(HAND, connectivity=6)
    with pytest.raises(TransegError, match=r"must be \(H, W\), got shape \(4,\)"):
        label_segments(np.zeros(4, int))
