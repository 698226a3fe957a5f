"""Pictures for people: label overlays and the confusion-matrix figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from transeg.data.labels import IGNORE_INDEX
from transeg.errors import TransegError


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5,
            ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """(H, W, 3) uint8 blend ``(1 - alpha) * image + alpha * palette[labels]``;
    pixels labelled ``ignore_index`` keep the image colour."""
    image, labels, palette = np.asarray(image), np.asarray(labels), np.asarray(palette)
    if image.ndim != 3 or image.shape[2] != 3 or labels.shape != image.shape[:2]:
        raise TransegError(f"overlay: image {image.shape} and labels {labels.shape} do not match")
    if not 0.0 <= alpha <= 1.0:
        raise TransegError(f"overlay: alpha must lie in [0, 1], got {alpha}")
    keep = labels == ignore_index if ignore_index is not None else np.zeros(labels.shape, dtype=bool)
    drawn = labels[~keep]
    if drawn.size and (drawn.min() < 0 or drawn.max() >= len(palette)):
        raise TransegError(f"overlay: label values {drawn.min()}..{drawn.max()} exceed the "
                           f"{len(palette)}-colour palette")
    colours = palette[np.where(keep, 0, labels)].astype(np.float32)
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    out = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    out[keep] = image[keep]
    return out


_CMAP_ANCHORS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)
_EMPTY_ROW_RGB = (200, 200, 200)
_MAX_LABEL_CHARS = 24


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] of any shape (...) to uint8 RGB (..., 3)."""
    pos = np.clip(values, 0.0, 1.0) * (len(_CMAP_ANCHORS) - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), len(_CMAP_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _CMAP_ANCHORS[lo] * (1 - frac) + _CMAP_ANCHORS[lo + 1] * frac
    return np.rint(rgb).astype(np.uint8)


def confusion_cell_size(num_classes: int) -> int:
    """Pixels per cell side: max(4, 800 // K), so the grid stays about 800 px up to ~200 classes; at
    least 32 px up to ``MAX_GRID_CLASSES`` classes, room for a percentage."""
    if num_classes <= MAX_GRID_CLASSES:
        return max(32, 800 // num_classes)
    return max(4, 800 // num_classes)


MAX_GRID_CLASSES = 30  # above this, the figure ranks the top confusions instead of drawing the grid
TOP_CONFUSIONS = 20


def row_normalised(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, K) counts (rows ground truth) -> (K, K) row shares in [0, 1] and the (K,) rows that have pixels."""
    m = matrix.astype(np.float64)
    row_sum = m.sum(axis=1, keepdims=True)
    return np.divide(m, row_sum, out=np.zeros_like(m), where=row_sum > 0), row_sum[:, 0] > 0


def top_confusions(matrix: np.ndarray, names: list[str], count: int = TOP_CONFUSIONS) -> list[tuple[str, str, float]]:
    """The ``count`` largest off-diagonal row shares: (ground truth, prediction, share), largest first."""
    norm, _ = row_normalised(matrix)
    np.fill_diagonal(norm, 0.0)
    order = np.argsort(-norm, axis=None, kind="stable")[:count]
    rows, cols = np.unravel_index(order, norm.shape)
    return [(names[r], names[c], float(norm[r, c])) for r, c in zip(rows, cols, strict=True) if norm[r, c] > 0]


def save_confusion_png(
    matrix: torch.Tensor | np.ndarray, path: str | Path, class_names: list[str] | None = None
) -> Path:
    """Write a (K, K) confusion matrix (rows ground truth, columns prediction) as a PNG; returns its path.

    Up to ``MAX_GRID_CLASSES`` classes: the row-normalised grid, each cell coloured by its row share
    (viridis-like, grey for rows without ground truth) and labelled with it in percent, class names on
    both axes, the axis titles "ground truth" and "prediction", and a colour bar (0-100 %). More
    classes: the top ``TOP_CONFUSIONS`` confusions as a ranked bar chart of row shares.
    """
    m = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise TransegError(f"confusion matrix must be square (K, K), got shape {m.shape}")
    k = m.shape[0]
    if class_names is not None and len(class_names) != k:
        raise TransegError(f"got {len(class_names)} class names for a {k}-class confusion matrix")
    names = class_names if class_names is not None else [str(i) for i in range(k)]
    names = [n if len(n) <= _MAX_LABEL_CHARS else n[: _MAX_LABEL_CHARS - 2] + ".." for n in names]
    image = _grid_figure(m, names) if k <= MAX_GRID_CLASSES else _ranked_figure(top_confusions(m, names), k)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


_FONT = ImageFont.load_default()
_PAD = 6
_BAR_WIDTH = 20


def _text_width(text: str) -> int:
    return int(_FONT.getbbox(text)[2])


def _grid_figure(m: np.ndarray, names: list[str]) -> Image.Image:
    """The annotated grid with names, axis titles and colour bar on a white canvas."""
    k = m.shape[0]
    norm, has_rows = row_normalised(m)
    rgb = colormap(norm)
    rgb[~has_rows] = _EMPTY_ROW_RGB
    cell = confusion_cell_size(k)
    grid = Image.fromarray(np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1), mode="RGB")
    draw = ImageDraw.Draw(grid)
    for i, j in np.argwhere(np.repeat(has_rows[:, None], k, axis=1)):
        dark = rgb[i, j].astype(np.float64) @ (0.299, 0.587, 0.114) < 128
        draw.text((j * cell + cell // 2, i * cell + cell // 2), f"{norm[i, j] * 100:.0f}",
                  fill="white" if dark else "black", font=_FONT, anchor="mm")
    title = 16  # the axis titles' band
    margin = max(_text_width(n) for n in names) + 2 * _PAD
    bar_area = _BAR_WIDTH + _text_width("100%") + 3 * _PAD
    left = top = title + margin
    canvas = Image.new("RGB", (left + grid.width + bar_area, top + grid.height + 2 * _PAD), "white")
    canvas.paste(grid, (left, top))
    canvas_draw = ImageDraw.Draw(canvas)
    strip = Image.new("RGB", (margin, grid.height), "white")  # column names, drawn then turned upright
    strip_draw = ImageDraw.Draw(strip)
    for i, name in enumerate(names):
        y = i * cell + cell // 2
        canvas_draw.text((left - _PAD - _text_width(name), top + y), name, fill="black", font=_FONT, anchor="lm")
        strip_draw.text((_PAD, y), name, fill="black", font=_FONT, anchor="lm")
    canvas.paste(strip.rotate(90, expand=True), (left, title))
    canvas_draw.text((left + grid.width // 2, title // 2), "prediction", fill="black", font=_FONT, anchor="mm")
    label = Image.new("RGB", (grid.height, title), "white")
    ImageDraw.Draw(label).text((grid.height // 2, title // 2), "ground truth (row %)", fill="black", font=_FONT,
                               anchor="mm")
    canvas.paste(label.rotate(90, expand=True), (0, top))
    _colour_bar(canvas, (left + grid.width + _PAD, top), grid.height)
    return canvas


def _colour_bar(canvas: Image.Image, corner: tuple[int, int], height: int) -> None:
    """A vertical colour bar, 100 % at the top, with 0 / 50 / 100 % ticks, drawn onto ``canvas``."""
    x, y = corner
    values = np.linspace(1.0, 0.0, height)[:, None].repeat(_BAR_WIDTH, axis=1)
    canvas.paste(Image.fromarray(colormap(values), mode="RGB"), (x, y))
    draw = ImageDraw.Draw(canvas)
    for share in (0.0, 0.5, 1.0):
        ty = y + round((1 - share) * (height - 1))
        draw.line([(x + _BAR_WIDTH, ty), (x + _BAR_WIDTH + 3, ty)], fill="black")
        draw.text((x + _BAR_WIDTH + _PAD, ty), f"{share * 100:.0f}%", fill="black", font=_FONT, anchor="lm")


def _ranked_figure(confusions: list[tuple[str, str, float]], k: int) -> Image.Image:
    """Horizontal bars, longest first: "ground truth -> prediction", length and colour = the row share."""
    row, bar_max = 18, 400
    labels = [f"{gt} -> {pred}" for gt, pred, _ in confusions] or ["no confusion"]
    margin = max(_text_width(t) for t in labels) + 2 * _PAD
    title = (f"top confusions of {k} classes: share of the ground-truth class's pixels "
             "(ground truth -> prediction)")
    width = max(margin + bar_max + _text_width("100.0%") + 3 * _PAD, _text_width(title) + 2 * _PAD)
    canvas = Image.new("RGB", (width, 2 * row + row * len(labels) + _PAD), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((_PAD, row // 2), title, fill="black", font=_FONT, anchor="lm")
    for i, (label, (_, _, share)) in enumerate(zip(labels, confusions, strict=False)):
        y = 2 * row + i * row
        draw.text((margin - _PAD - _text_width(label), y + row // 2), label, fill="black", font=_FONT, anchor="lm")
        length = max(1, round(share * bar_max))
        draw.rectangle([margin, y + 3, margin + length - 1, y + row - 4], fill=tuple(int(c) for c in colormap(
            np.array(share))))
        draw.text((margin + length + _PAD, y + row // 2), f"{share * 100:.1f}%", fill="black", font=_FONT,
                  anchor="lm")
    return canvas


def overlay_legend(picture: np.ndarray, labels: np.ndarray, palette: np.ndarray, class_names: list[str],
                   ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """(H, W, 3) uint8 picture -> (H', W + L, 3): a white legend column on the right listing the classes
    present in the (H, W) ``labels``, each with a swatch of its palette colour (taller than H when
    the list needs it)."""
    values = np.unique(np.asarray(labels))
    present = [int(v) for v in values if v != ignore_index and 0 <= v < len(class_names)]
    row, swatch = 16, 12
    width = 3 * _PAD + swatch + max([_text_width(class_names[c]) for c in present] + [0])
    height = max(picture.shape[0], _PAD + row * len(present))
    canvas = Image.new("RGB", (picture.shape[1] + width, height), "white")
    canvas.paste(Image.fromarray(np.ascontiguousarray(picture)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = picture.shape[1] + _PAD
    for i, c in enumerate(present):
        y = _PAD + i * row
        draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=tuple(int(v) for v in palette[c]))
        draw.text((x + swatch + _PAD, y + swatch // 2), class_names[c], fill="black", font=_FONT, anchor="lm")
    return np.asarray(canvas)


def legend_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """The names a legend shows: ``class_names``, or "class i" for a model that has none."""
    return list(class_names) if class_names else [f"class {i}" for i in range(num_classes)]


def overlay_with_legend(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, class_names: list[str],
                        alpha: float = 0.5, legend: bool = True,
                        ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """The overlay ``predict`` and ``serve`` write: (H, W, 3) ``overlay`` of ``image`` and ``labels``, with
    ``legend`` the ``overlay_legend`` column of the classes present to its right, (H', W + L, 3)."""
    blended = overlay(image, labels, palette, alpha=alpha, ignore_index=ignore_index)
    return overlay_legend(blended, labels, palette, class_names, ignore_index) if legend else blended
