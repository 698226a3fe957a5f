"""Pictures for people: label overlays and the confusion-matrix figure."""

from __future__ import annotations

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
    """Pixels per cell side: max(4, 800 // K), so the grid stays about 800 px up to ~200 classes."""
    return max(4, 800 // num_classes)


def save_confusion_png(
    matrix: torch.Tensor | np.ndarray, path: str | Path, class_names: list[str] | None = None
) -> Path:
    """Write a row-normalised (K, K) confusion matrix as a PNG and return its path.

    Rows = ground truth, columns = prediction; each cell is a square of ``confusion_cell_size(K)`` px
    coloured by its row share (viridis-like); rows without ground-truth pixels are grey. For K <= 40
    class names are drawn left of the rows and above the columns, which adds an equal margin on both
    sides (the image stays square); otherwise the image is exactly the (K * cell)-px grid.
    """
    m = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise TransegError(f"confusion matrix must be square (K, K), got shape {m.shape}")
    k = m.shape[0]
    if class_names is not None and len(class_names) != k:
        raise TransegError(f"got {len(class_names)} class names for a {k}-class confusion matrix")
    m = m.astype(np.float64)
    row_sum = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, row_sum, out=np.zeros_like(m), where=row_sum > 0)
    rgb = colormap(norm)
    rgb[row_sum[:, 0] == 0] = _EMPTY_ROW_RGB
    cell = confusion_cell_size(k)
    grid = Image.fromarray(np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1), mode="RGB")

    image = grid
    if k <= 40:
        names = class_names if class_names is not None else [str(i) for i in range(k)]
        names = [n if len(n) <= _MAX_LABEL_CHARS else n[: _MAX_LABEL_CHARS - 2] + ".." for n in names]
        image = _add_axis_labels(grid, names, cell)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def _add_axis_labels(grid: Image.Image, names: list[str], cell: int) -> Image.Image:
    """Put ``grid`` in the bottom-right of a square canvas with row names left and column names on top."""
    font = ImageFont.load_default()
    pad = 4
    measure = ImageDraw.Draw(grid)
    widths = [measure.textbbox((0, 0), n, font=font)[2] for n in names]
    margin = max(widths) + 2 * pad
    side = margin + grid.width
    canvas = Image.new("RGB", (side, side), "white")
    canvas.paste(grid, (margin, margin))

    # Row labels, right-aligned against the grid; column labels drawn the same way on a strip that is
    # then rotated 90 degrees counter-clockwise so they read upwards from the grid's top edge.
    strip = Image.new("RGB", (margin, grid.height), "white")
    draw_rows, draw_cols = ImageDraw.Draw(canvas), ImageDraw.Draw(strip)
    for i, (name, width) in enumerate(zip(names, widths, strict=True)):
        y = i * cell + cell // 2
        draw_rows.text((margin - pad - width, margin + y), name, fill="black", font=font, anchor="lm")
        draw_cols.text((pad, y), name, fill="black", font=font, anchor="lm")
    canvas.paste(strip.rotate(90, expand=True), (margin, 0))
    return canvas
