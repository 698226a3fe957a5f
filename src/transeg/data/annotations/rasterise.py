"""Shapes → pixels: COCO's polygon rasterisation, Pillow's for LabelMe-style shapes, and the rule that
decides which shape owns a pixel two of them cover.

``coco_polygon`` follows the published algorithm of the COCO API's ``rleFrPoly`` (the one
``pycocotools.mask.frPyObjects`` runs): the outline is walked on a 5× finer integer grid, the
points where it crosses a pixel column's centre are kept, and each column is filled between
successive crossings. It matches pycocotools pixel for pixel (tests/data/annotations/test_rasterise.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from transeg.data.labels import IGNORE_INDEX

OVERLAP_RULES = ("last", "first", "smaller-on-top")
_SCALE = 5.0


def _outline(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) polygon → the integer points (u, v) of its outline on the 5× grid, edge by edge."""
    x = np.trunc(_SCALE * xy[:, 0] + 0.5).astype(np.int64)
    y = np.trunc(_SCALE * xy[:, 1] + 0.5).astype(np.int64)
    x, y = np.r_[x, x[0]], np.r_[y, y[0]]
    us, vs = [], []
    for j in range(len(xy)):
        xs, xe, ys, ye = int(x[j]), int(x[j + 1]), int(y[j]), int(y[j + 1])
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx >= dy:
            slope = (ye - ys) / dx if dx else 0.0
            t = np.arange(dx + 1)[::-1] if flip else np.arange(dx + 1)
            us.append(t + xs)
            vs.append(np.trunc(ys + slope * t + 0.5).astype(np.int64))
        else:
            slope = (xe - xs) / dy
            t = np.arange(dy + 1)[::-1] if flip else np.arange(dy + 1)
            vs.append(t + ys)
            us.append(np.trunc(xs + slope * t + 0.5).astype(np.int64))
    return np.concatenate(us), np.concatenate(vs)


def coco_polygon(points: Sequence[float], height: int, width: int) -> np.ndarray:
    """A COCO polygon ``[x1, y1, x2, y2, …]`` (pixel corners at integers) → (H, W) bool mask."""
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    u, v = _outline(xy)
    moved = np.flatnonzero(u[1:] != u[:-1]) + 1
    xd = (np.where(u[moved] < u[moved - 1], u[moved], u[moved] - 1) + 0.5) / _SCALE - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= width - 1)
    yd = (np.minimum(v[moved], v[moved - 1]) + 0.5) / _SCALE - 0.5
    yd = np.ceil(np.clip(yd, 0, height))
    starts = np.sort(np.r_[(xd[keep] * height + yd[keep]).astype(np.int64), height * width])
    runs = np.diff(np.r_[0, starts])
    merged: list[int] = [int(runs[0])]
    j = 1
    while j < len(runs):  # a zero-length run joins its neighbours
        if runs[j] > 0:
            merged.append(int(runs[j]))
            j += 1
        else:
            j += 1
            if j < len(runs):
                merged[-1] += int(runs[j])
                j += 1
    values = np.arange(len(merged)) % 2 == 1
    return np.repeat(values, merged).reshape((height, width), order="F")


LABELME_LINE_WIDTH = 10  # LabelMe's widths for lines and points when it makes masks itself
LABELME_POINT_RADIUS = 5


def pil_shape(kind: str, points: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """A LabelMe-style shape drawn by Pillow as LabelMe's own mask conversion draws it (outline
    included) → (H, W) bool mask.

    ``polygon`` and ``oriented_rectangle``: the vertices; ``rectangle``: two opposite corners;
    ``circle``: the centre and a point on the circle; ``line`` and ``linestrip``: a 10-pixel-wide
    stroke; ``point``: a disc of radius 5.
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    xy = [(float(x), float(y)) for x, y in points]
    if kind in ("polygon", "oriented_rectangle"):
        draw.polygon(xy, outline=1, fill=1)
    elif kind == "rectangle":
        (x1, y1), (x2, y2) = xy
        draw.rectangle(((min(x1, x2), min(y1, y2)), (max(x1, x2), max(y1, y2))), outline=1, fill=1)
    elif kind == "circle":
        (cx, cy), (px, py) = xy
        r = float(np.hypot(px - cx, py - cy))
        draw.ellipse(((cx - r, cy - r), (cx + r, cy + r)), outline=1, fill=1)
    elif kind in ("line", "linestrip"):
        draw.line(xy, fill=1, width=LABELME_LINE_WIDTH)
    elif kind == "point":
        (cx, cy), r = xy[0], LABELME_POINT_RADIUS
        draw.ellipse(((cx - r, cy - r), (cx + r, cy + r)), outline=1, fill=1)
    else:
        raise ValueError(f"unsupported shape type {kind!r}")
    return np.asarray(canvas, dtype=bool)


def paint(shapes: Sequence[tuple[np.ndarray, int]], height: int, width: int, rule: str = "last",
          fill: int = IGNORE_INDEX) -> np.ndarray:
    """(mask, class) pairs in file order → (H, W) uint8 label map, ``fill`` where no shape is.

    Where shapes overlap, ``last`` gives the pixel to the shape listed last (the drawing order of
    the tools), ``first`` to the one listed first, ``smaller-on-top`` to the one of fewer pixels
    (ties: the later one), so that small objects drawn inside large ones survive.
    """
    if rule not in OVERLAP_RULES:
        raise ValueError(f"unknown overlap rule {rule!r} (known: {', '.join(OVERLAP_RULES)})")
    order = list(range(len(shapes)))
    if rule == "first":
        order.reverse()
    elif rule == "smaller-on-top":
        order.sort(key=lambda i: -int(shapes[i][0].sum()))
    labels = np.full((height, width), fill, dtype=np.uint8)
    for i in order:
        mask, value = shapes[i]
        labels[mask] = value
    return labels
