"""COCO polygon rasterisation pixel-exact against pycocotools (frPyObjects → merge → decode), and the
overlap rules of ``paint``."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco_mask
import pytest

from transeg.data.annotations.rasterise import coco_polygon, paint, pil_shape

# pycocotools 2.0 calls np.array(copy=False) under NumPy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

def reference(points: np.ndarray, h: int, w: int) -> np.ndarray:
    return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([points.tolist()], h, w))).astype(bool)


@pytest.mark.parametrize("grid", ["float", "integer", "half"])
def test_random_polygons_match_pycocotools(grid):
    rng = np.random.default_rng({"float": 0, "integer": 1, "half": 2}[grid])
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(1, 64, 2))
        points = rng.uniform(-8, max(h, w) + 8, size=2 * int(rng.integers(3, 14)))  # may leave the image
        points = {"float": points, "integer": np.round(points), "half": np.round(points * 2) / 2}[grid]
        assert np.array_equal(coco_polygon(points, h, w), reference(points, h, w))


def test_degenerate_polygons_match_pycocotools():
    for points in ([0, 0, 0, 0, 0, 0], [1, 1, 5, 1, 9, 1], [2.2, 2.2, 2.2, 7.7, 2.2, 3.3], [0, 0, 10, 10, 0, 10]):
        array = np.array(points, float)
        assert np.array_equal(coco_polygon(array, 12, 12), reference(array, 12, 12))


def test_pil_shapes_cover_what_they_say():
    square = pil_shape("rectangle", [(6, 5), (2, 1)], 10, 10)
    assert square.sum() == 25 and square[1:6, 2:7].all()
    disc = pil_shape("circle", [(10, 10), (10, 14)], 21, 21)
    assert disc[10, 6] and disc[10, 14] and not disc[10, 5] and not disc[5, 5]
    assert disc.sum() == pytest.approx(np.pi * 4.5**2, rel=0.25)


def test_overlap_rules():
    big = np.zeros((4, 4), bool)
    big[:, :3] = True
    small = np.zeros((4, 4), bool)
    small[1:3, 1:3] = True
    assert paint([(small, 1), (big, 2)], 4, 4, "last")[1, 1] == 2
    assert paint([(small, 1), (big, 2)], 4, 4, "first")[1, 1] == 1
    assert paint([(small, 1), (big, 2)], 4, 4, "smaller-on-top")[1, 1] == 1
    assert paint([(big, 2), (small, 1)], 4, 4, "smaller-on-top")[1, 1] == 1
    assert paint([(small, 1), (big, 2)], 4, 4, "last")[0, 3] == 255


def test_pil_lines_and_points_have_labelme_widths():
    point = pil_shape("point", [(20, 20)], 41, 41)
    assert point[20, 15] and point[20, 25] and not point[20, 14] and not point[20, 26]
    line = pil_shape("line", [(5, 20), (35, 20)], 41, 41)
    assert line[:, 20].sum() == 10 and line[20, 5:36].all()
    assert np.array_equal(pil_shape("oriented_rectangle", [(2, 2), (9, 2), (9, 6), (2, 6)], 12, 12),
                          pil_shape("rectangle", [(2, 2), (9, 6)], 12, 12))
