"""Large and georeferenced rasters through tifffile: TIFF rows read without decoding the whole
image, N-band TIFFs, and label maps written strip by strip with the input's GeoTIFF tags.

A tiled or stripped TIFF stores its pixels in independently compressed segments; ``RasterReader``
decodes only the segments a band of rows touches, so reading a 20000-row image band by band never
holds more than one band (plus one segment row) in memory. Other formats are decoded whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transeg.data.images import read_image
from transeg.errors import TransegError

TIFF_SUFFIXES = (".tif", ".tiff")
# ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory, GeoDoubleParams, GeoAsciiParams
GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)
_GEO_DTYPES = {33550: 12, 33922: 12, 34264: 12, 34735: 3, 34736: 12, 34737: 2}  # TIFF DOUBLE, SHORT, ASCII


def _tifffile() -> Any:
    try:
        import tifffile
    except ImportError:
        raise TransegError("reading and writing TIFF rasters needs tifffile: pip install 'transeg[geo]'") from None
    return tifffile


@dataclass(frozen=True)
class GeoTag:
    """One GeoTIFF tag: its code, TIFF data type and value (tuple of numbers, or a string)."""

    code: int
    dtype: int
    value: Any

    def extratag(self) -> tuple[int, int, int, Any, bool]:
        """The tag as tifffile's ``imwrite(extratags=...)`` entry."""
        count = len(self.value) + 1 if isinstance(self.value, str) else len(self.value)
        return self.code, self.dtype, count, self.value, True


def is_tiff(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TIFF_SUFFIXES


class RasterReader:
    """Rows of an (H, W, C) image: ``read_rows(y1, y2)`` -> (y2 - y1, W, C) array of the file's dtype.

    TIFFs (tiled or stripped, chunky or single-band, any codec tifffile decodes) are read a segment
    row at a time; any other image is decoded once by Pillow as (H, W, 3) uint8 RGB. Use as a context
    manager, or call ``close``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tiff: Any = None
        self._whole: np.ndarray | None = None
        self.geotags: tuple[GeoTag, ...] = ()
        if not is_tiff(self.path):
            self._whole = read_image(self.path)
            self.height, self.width, self.channels = self._whole.shape
            self.dtype = self._whole.dtype
            return
        if not self.path.is_file():
            raise TransegError(f"{self.path}: no such file")
        tifffile = _tifffile()
        try:
            self._tiff = tifffile.TiffFile(self.path)
            page = self._tiff.pages.first
            self._page = page
            shape = page.shape if page.ndim == 3 and page.planarconfig == 1 else None
        except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
            self.close()
            raise TransegError(f"{self.path}: cannot read the TIFF ({' '.join(str(exc).split())})") from None
        if page.ndim == 2:
            shape = (*page.shape, 1)
        if shape is None or (page.is_tiled and getattr(page, "imagedepth", 1) != 1):
            self.close()
            raise TransegError(f"{self.path}: unsupported TIFF layout {page.shape} (planar {page.planarconfig}): "
                               "expected an (H, W) or (H, W, bands) image with interleaved bands")
        self.height, self.width, self.channels = (int(s) for s in shape)
        self.dtype = np.dtype(page.dtype)
        self.geotags = tuple(GeoTag(code, _GEO_DTYPES[code], page.tags[code].value)
                             for code in GEO_TAGS if code in page.tags)

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._tiff is not None:
            self._tiff.close()
            self._tiff = None

    def read(self) -> np.ndarray:
        """The whole (H, W, C) image."""
        return self.read_rows(0, self.height)

    def read_rows(self, y1: int, y2: int) -> np.ndarray:
        """Rows ``y1:y2`` as a (y2 - y1, W, C) array, decoding only the segments that hold them."""
        if self._whole is not None:
            return self._whole[y1:y2]
        page = self._page
        seg_h = page.tilelength if page.is_tiled else page.rowsperstrip or self.height
        seg_w = page.tilewidth if page.is_tiled else self.width
        across = -(-self.width // seg_w)
        first, last = y1 // seg_h, (y2 - 1) // seg_h
        indices = [r * across + c for r in range(first, last + 1) for c in range(across)]
        out = np.empty((y2 - y1, self.width, self.channels), self.dtype)
        handle = self._tiff.filehandle
        offsets = [page.dataoffsets[i] for i in indices]
        counts = [page.databytecounts[i] for i in indices]
        try:
            for data, index in handle.read_segments(offsets, counts, indices):
                segment = page.decode(data, index, jpegtables=page.jpegtables)[0]
                segment = segment.reshape(segment.shape[-3], segment.shape[-2], -1)  # (h, w, C)
                top, left = (index // across) * seg_h, (index % across) * seg_w
                a, b = max(y1, top), min(y2, top + segment.shape[0], self.height)
                w = min(segment.shape[1], self.width - left)
                out[a - y1:b - y1, left:left + w] = segment[a - top:b - top, :w]
        except (OSError, ValueError, RuntimeError) as exc:
            raise TransegError(f"{self.path}: cannot decode rows {y1}..{y2} ({' '.join(str(exc).split())})") from None
        return out


def read_raster(path: str | Path) -> np.ndarray:
    """An (H, W, C) image in its own dtype: TIFFs through tifffile (any number of bands), other
    formats as (H, W, 3) uint8 RGB."""
    with RasterReader(path) as reader:
        return reader.read()


def write_label_tiff(path: str | Path, blocks: Iterable[np.ndarray], height: int, width: int,
                     palette: np.ndarray | None = None, geotags: Iterable[GeoTag] = (), tile: int = 256) -> None:
    """Write (H, W) uint8 labels given as consecutive row blocks (any heights summing to H) as a tiled,
    deflate-compressed TIFF, coloured by ``palette`` ((N <= 256, 3) uint8) and carrying ``geotags``.
    Memory: one row of ``tile``-high tiles, whatever H. (tifffile streams tiles, not strips.)"""
    tifffile = _tifffile()

    def tiles() -> Iterator[np.ndarray]:
        for rows in _rows_of(blocks, tile):
            padded = np.zeros((tile, -(-width // tile) * tile), np.uint8)
            padded[:rows.shape[0], :width] = rows
            for left in range(0, width, tile):
                yield padded[:, left:left + tile]

    colormap = None
    if palette is not None:
        colormap = np.zeros((3, 256), np.uint16)
        colormap[:, :len(palette)] = np.asarray(palette, np.uint16).T * 257
    tifffile.imwrite(path, data=tiles(), shape=(height, width), dtype=np.uint8, tile=(tile, tile),
                     photometric="palette" if colormap is not None else "minisblack", colormap=colormap,
                     compression="zlib", extratags=[tag.extratag() for tag in geotags])


def _rows_of(blocks: Iterable[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """Consecutive row blocks of any heights regrouped into blocks of ``rows`` rows (the last shorter)."""
    pending: list[np.ndarray] = []
    count = 0
    for block in blocks:
        if block.dtype != np.uint8:
            raise TransegError(f"a TIFF label map holds up to 256 classes (uint8 labels), got {block.dtype}")
        pending.append(block)
        count += block.shape[0]
        while count >= rows:
            joined = np.concatenate(pending)
            yield joined[:rows]
            pending, count = [joined[rows:]], count - rows
    if count:
        yield np.concatenate(pending)
