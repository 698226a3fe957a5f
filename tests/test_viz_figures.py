"""Readable figures: the confusion grid (row percentages, axis titles, colour bar), the ranked
confusions beyond 30 classes, and the overlay legend with the palette colours of the classes present."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from transeg.data.labels import default_palette
from transeg.viz import (
    MAX_GRID_CLASSES,
    colormap,
    confusion_cell_size,
    legend_names,
    overlay,
    overlay_legend,
    overlay_with_legend,
    row_normalised,
    save_confusion_png,
    top_confusions,
)

MATRIX = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])  # row 1: no ground truth


def _find_grid(px: np.ndarray, colour: tuple[int, int, int]) -> tuple[int, int]:
    """(y, x) of the top-left pixel of the first pixel of ``colour`` (row-major)."""
    ys, xs = np.nonzero(np.all(px == colour, axis=2))
    return int(ys.min()), int(xs[ys == ys.min()].min())


def test_row_shares_by_hand():
    norm, has_rows = row_normalised(MATRIX)
    np.testing.assert_allclose(norm, [[0.75, 0.25, 0], [0, 0, 0], [0.25, 0.25, 0.5]])
    assert has_rows.tolist() == [True, False, True]


def test_grid_cells_carry_their_percentage_axis_titles_and_a_colour_bar(tmp_path):
    path = save_confusion_png(MATRIX, tmp_path / "cm.png", ["road", "car", "sky"])
    px = np.asarray(Image.open(path).convert("RGB")).astype(int)
    cell = confusion_cell_size(3)
    c75 = tuple(int(v) for v in colormap(np.array(0.75)))
    y0, x0 = _find_grid(px, c75)  # cell (0, 0): 75 %
    assert tuple(px[y0 + 2, x0 + cell + 2]) == tuple(colormap(np.array(0.25)))  # cell (0, 1)
    assert tuple(px[y0 + cell + 2, x0 + 2]) == (200, 200, 200)  # the empty row is grey
    assert tuple(px[y0 + 2 * cell + 2, x0 + 2 * cell + 2]) == tuple(colormap(np.array(0.5)))
    # each labelled cell holds text: pixels that are neither its colour (the digits) near its centre
    for i, j in [(0, 0), (0, 1), (2, 2)]:
        centre = px[y0 + i * cell + cell // 2 - 6: y0 + i * cell + cell // 2 + 6,
                    x0 + j * cell + cell // 2 - 12: x0 + j * cell + cell // 2 + 12]
        assert (np.abs(centre - px[y0 + i * cell + 2, x0 + j * cell + 2]).sum(axis=2) > 100).any(), (i, j)
    empty_centre = px[y0 + cell + cell // 2 - 6: y0 + cell + cell // 2 + 6, x0 + cell // 2 - 12: x0 + cell // 2 + 12]
    assert (empty_centre == 200).all()  # no number in a row without ground truth
    # the colour bar right of the grid: 100 % at its top, 0 % at its bottom
    bar = px[y0: y0 + 3 * cell, x0 + 3 * cell:]
    top_colour, bottom_colour = tuple(colormap(np.array(1.0))), tuple(colormap(np.array(0.0)))
    assert np.all(bar[0] == top_colour, axis=1).any() and np.all(bar[-1] == bottom_colour, axis=1).any()
    # titles: dark pixels above the column names (prediction) and left of the row names (ground truth)
    assert (px[:14, x0: x0 + 3 * cell] < 100).any() and (px[y0: y0 + 3 * cell, :14] < 100).any()


def test_the_printed_numbers_are_the_row_percentages(tmp_path):
    """A cell's text is drawn from ``row_normalised``: a 1-class matrix prints "100", a 2x2 one "75"
    and "25" — compared against the same strings drawn alone on the cell colour."""
    from PIL import ImageDraw

    from transeg.viz import _FONT

    path = save_confusion_png(np.array([[3, 1], [1, 1]]), tmp_path / "cm.png")
    px = np.asarray(Image.open(path).convert("RGB"))
    cell = confusion_cell_size(2)
    colour = tuple(int(v) for v in colormap(np.array(0.75)))
    y0, x0 = _find_grid(px.astype(int), colour)
    for text, share, (i, j) in [("75", 0.75, (0, 0)), ("25", 0.25, (0, 1))]:
        fill = tuple(int(v) for v in colormap(np.array(share)))
        ref = Image.new("RGB", (cell, cell), fill)
        dark = np.array(fill) @ (0.299, 0.587, 0.114) < 128
        ImageDraw.Draw(ref).text((cell // 2, cell // 2), text, fill="white" if dark else "black", font=_FONT,
                                 anchor="mm")
        np.testing.assert_array_equal(px[y0 + i * cell: y0 + (i + 1) * cell, x0 + j * cell: x0 + (j + 1) * cell],
                                      np.asarray(ref))


def test_many_classes_rank_the_top_confusions(tmp_path):
    k = MAX_GRID_CLASSES + 1
    m = np.diag(np.full(k, 10))
    m[3, 7], m[5, 1] = 30, 5  # class 3: 30 of 40 pixels go to 7; class 5: 5 of 15 go to 1
    names = [f"c{i}" for i in range(k)]
    assert top_confusions(m, names) == [("c3", "c7", 0.75), ("c5", "c1", pytest.approx(1 / 3))]
    path = save_confusion_png(m, tmp_path / "cm.png", names)
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[0] < 200  # a short ranked chart, not a 31 x 31 grid
    bar_colour = tuple(colormap(np.array(0.75)))
    lengths = [int(np.all(img[y] == bar_colour, axis=1).sum()) for y in range(img.shape[0])]
    assert max(lengths) == 300  # 75 % of the 400-px scale


def test_overlay_legend_lists_present_classes_with_their_colours():
    palette = default_palette(5)
    names = ["background", "road", "car", "sky", "tree"]
    labels = np.zeros((40, 30), dtype=np.uint8)
    labels[:10] = 3
    labels[10:12] = 255
    picture = np.full((40, 30, 3), 90, dtype=np.uint8)
    out = overlay_legend(picture, labels, palette, names)
    assert out.shape[0] == 40 and out.shape[1] > 30
    np.testing.assert_array_equal(out[:, :30], picture)
    legend = out[:, 30:]
    for c in (0, 3):  # present: a swatch of the palette colour
        assert np.all(legend == palette[c], axis=2).sum() >= 100, names[c]
    for c in (1, 2, 4):  # absent: not listed
        assert not np.all(legend == palette[c], axis=2).any(), names[c]
    many = overlay_legend(picture, np.arange(5).repeat(240).reshape(40, 30), palette, names)
    assert many.shape[0] >= 5 * 16  # grows to fit every class present


def test_overlay_with_legend_is_the_overlay_plus_the_legend_column():
    """``predict``'s and ``serve``'s overlay: by default the blend with the legend to its right; without
    the legend exactly the image-sized blend."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    labels = np.zeros((24, 32), dtype=np.uint8)
    labels[5:15, 3:20] = 2
    palette = default_palette(3)
    names = legend_names(None, 3)
    assert names == ["class 0", "class 1", "class 2"]
    plain = overlay(image, labels, palette, alpha=0.4)
    np.testing.assert_array_equal(overlay_with_legend(image, labels, palette, names, alpha=0.4, legend=False), plain)
    framed = overlay_with_legend(image, labels, palette, names, alpha=0.4)
    np.testing.assert_array_equal(framed, overlay_legend(plain, labels, palette, names))
    assert framed.shape[1] > 32 and framed.shape[0] >= 24
    np.testing.assert_array_equal(framed[:24, :32], plain)
    legend = framed[:, 32:]
    assert np.all(legend == palette[2], axis=2).sum() >= 100  # class 2's swatch
    assert not np.all(legend == palette[1], axis=2).any()  # class 1 is absent
