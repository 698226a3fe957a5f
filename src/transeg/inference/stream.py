"""Segment a TIFF (of any size, bands and georeference) into a TIFF label map, band by band.

In slide mode the image is read a window row at a time (``RasterReader``: only the TIFF segments
those rows hold), each finished band of rows becomes labels at once and is written as the next row
of tiles: peak memory follows the window and the image width, never its height. Other modes
predict the image in memory and write the same TIFF. The label map keeps the input's GeoTIFF tags
(CRS and transform); a preview overlay (longest side at most ``PREVIEW_SIDE``) comes with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from transeg.data.rasters import RasterReader, write_label_tiff
from transeg.inference.modes import Predictor
from transeg.viz import overlay

PREVIEW_SIDE = 2048


def to_display(image: np.ndarray) -> np.ndarray:
    """(H, W, C) image -> (H, W, 3) uint8 for display: the first three bands (or the first one,
    grey), scaled from the dtype's range (integers) or clipped to 0-255 (floats)."""
    shown = image[..., :3] if image.shape[2] >= 3 else np.repeat(image[..., :1], 3, axis=2)
    if shown.dtype == np.uint8:
        return shown
    if shown.dtype.kind in "ui":
        info = np.iinfo(shown.dtype)
        return ((shown.astype(np.float64) - info.min) * (255 / (info.max - info.min))).astype(np.uint8)
    return np.clip(shown, 0, 255).astype(np.uint8)


def predict_tiff(predictor: Predictor, path: Path, label_path: Path, palette: np.ndarray,
                 alpha: float = 0.5) -> np.ndarray:
    """Write the labels of the TIFF ``path`` to ``label_path`` (tiled TIFF, ``palette`` colours, the
    input's GeoTIFF tags); returns a (h, w, 3) uint8 overlay preview, every ``step``-th pixel."""
    with RasterReader(path) as reader:
        h, w = reader.height, reader.width
        step = max(-(-max(h, w) // PREVIEW_SIDE), 1)
        previews: list[tuple[np.ndarray, np.ndarray]] = []

        def bands() -> Iterator[np.ndarray]:
            if predictor.mode == "slide":
                labelled = predictor.predict_bands(reader.read_rows, (h, w))
            else:
                labelled = iter([predictor.predict(reader.read())])
            y = 0
            for labels in labelled:
                first = -y % step  # the band's first row on the preview grid
                rows = slice(first, labels.shape[0], step)
                # copies: views would keep each band's full rows alive, and memory would grow with the height
                previews.append((to_display(reader.read_rows(y, y + labels.shape[0])[rows, ::step]).copy(),
                                 labels[rows, ::step].copy()))
                y += labels.shape[0]
                yield labels

        write_label_tiff(label_path, bands(), h, w, palette=palette if len(palette) <= 256 else None,
                         geotags=reader.geotags)
    image = np.concatenate([p[0] for p in previews])
    return overlay(image, np.concatenate([p[1] for p in previews]), palette, alpha=alpha)
