"""Image and label-map I/O (Pillow), palettes and overlays.

Images are (H, W, 3) uint8 RGB arrays; label maps are (H, W) integer arrays of class indices.
Every failure to read a file is a one-line ``TransegError`` naming the file.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from transeg.data.labels import default_palette
from transeg.errors import TransegError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# What Pillow raises on missing, unreadable, truncated or corrupt files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                  Image.DecompressionBombError)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV")


@contextmanager
def _strict_loading() -> Iterator[None]:
    """Make Pillow raise on truncated files even if some other code turned that off."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


class ImageTooLarge(TransegError):
    """An image whose header declares more pixels than the reader accepts."""


def _open(path: str | Path, exif: bool) -> Image.Image:
    """Open and fully decode ``path`` (applying its EXIF orientation if ``exif``)."""
    path = Path(path)
    if not path.is_file():
        raise TransegError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise TransegError(f"{path}: the file is empty")
    return _decode(path, str(path), exif)


def _decode(source: str | Path | BinaryIO, name: str, exif: bool, max_pixels: int | None = None) -> Image.Image:
    """Fully decode ``source`` (a path or a binary stream named ``name`` in messages), refusing
    one whose header declares more than ``max_pixels`` pixels before decoding it."""
    try:
        with _strict_loading(), Image.open(source) as img:
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(f"{name}: the image is {width}x{height} ({width * height} pixels), over the "
                                    f"limit of {max_pixels} pixels")
            img.load()
            return ImageOps.exif_transpose(img) if exif else img.copy()
    except _DECODE_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if reason.startswith("cannot identify image file"):  # Pillow names the file, or a stream's repr
            reason = "not an image format Pillow reads"
        if isinstance(exc, Image.DecompressionBombError) and max_pixels is not None:
            raise ImageTooLarge(f"{name}: the image is over the limit of {max_pixels} pixels ({reason})") from None
        raise TransegError(f"{name}: cannot read the image ({reason})") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, upright per its EXIF orientation.

    Greyscale, palette, CMYK and 16-bit images are converted to RGB; alpha is dropped.
    """
    return _to_rgb(_open(path, exif=True))


def decode_image(data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
    """``read_image`` of an encoded image held in memory (``name`` labels it in messages); an
    ``ImageTooLarge`` for more than ``max_pixels`` pixels, checked on the header before decoding."""
    if not data:
        raise TransegError(f"{name}: the image is empty")
    return _to_rgb(_decode(io.BytesIO(data), name, exif=True, max_pixels=max_pixels))


def _to_rgb(img: Image.Image) -> np.ndarray:
    """A decoded image as (H, W, 3) uint8 RGB (16-bit greyscale scaled to 8 bits)."""
    if img.mode in _SIXTEEN_BIT_MODES:
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")  # honours palette transparency without a warning
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_label(path: str | Path) -> np.ndarray:
    """Read a label map of class indices: (H, W) uint8, or int64 when values exceed 255.

    Accepts 8-bit greyscale, palette images (the palette indices are the classes) and 16/32-bit
    greyscale. Colour (RGB) label maps are refused: their pixels are colours, not classes.
    """
    img = _open(path, exif=False)
    if img.mode in ("L", "P", "1"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in _SIXTEEN_BIT_MODES:
        labels = np.asarray(img, dtype=np.int64)
        if labels.size and labels.min() < 0:
            raise TransegError(f"{path}: the label map holds negative values (min {labels.min()})")
        if labels.size == 0 or labels.max() <= 255:
            return labels.astype(np.uint8)
        return labels
    if img.mode in _COLOUR_MODES:
        raise TransegError(
            f"{path}: the label map is a colour ({img.mode}) image; label maps must hold class "
            "indices, not colours: convert it to a greyscale or palette ('P') PNG of class indices"
        )
    raise TransegError(f"{path}: unsupported label map mode {img.mode!r} (use an 8-bit or 16-bit PNG)")


def save_label_png(labels: np.ndarray, path: str | Path, palette: np.ndarray | None = None) -> None:
    """Write (H, W) class indices as a PNG whose pixel values are the indices.

    With at most 256 palette entries and values <= 255 it is a palette ('P') PNG coloured by
    ``palette`` (default: ``default_palette(256)``); otherwise a 16-bit greyscale PNG.
    """
    path = Path(path)
    img = label_image(labels, palette, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")


def label_image(labels: np.ndarray, palette: np.ndarray | None = None, name: str = "labels") -> Image.Image:
    """(H, W) class indices as the image ``save_label_png`` writes: palette ('P') coloured by
    ``palette`` when it fits, else 16-bit greyscale; ``name`` labels the labels in messages."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise TransegError(f"{name}: labels must be an (H, W) integer array, "
                           f"got {labels.dtype} {labels.shape}")
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if low < 0 or high > 65535:
        raise TransegError(f"{name}: label values must lie in 0..65535, got {low}..{high}")
    if palette is None:
        palette = default_palette(256)
    palette = np.asarray(palette, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise TransegError(f"{name}: palette must be (N, 3), got {palette.shape}")
    if len(palette) <= 256 and high <= 255:
        img = Image.fromarray(labels.astype(np.uint8))
        img.putpalette(palette.reshape(-1).tolist())  # turns the 'L' image into 'P', values unchanged
    else:
        img = Image.fromarray(labels.astype(np.uint16))
    return img
