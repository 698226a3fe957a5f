"""Exports of class masks as PNGs: Pascal VOC-style ``SegmentationClass/`` folders (palette PNGs, or
colour PNGs with a ``labelmap.txt`` colour table), which is also CVAT's "Segmentation mask 1.1"."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from transeg.data.annotations.common import AnnotationSet, ImageEntry, Problems
from transeg.data.images import IMAGE_SUFFIXES
from transeg.data.labels import IGNORE_INDEX
from transeg.errors import TransegError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_VOID = (224, 224, 192)  # the colour of VOC's object outlines, index 255: ignored


def read_labelmap(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """``name:r,g,b:parts:actions`` lines (CVAT's and Datumaro's VOC colour table) → (name, colour)."""
    table = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TransegError(f"{path}: cannot read the colour table ({exc})") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(":")
        try:
            colour = tuple(int(v) for v in fields[1].split(","))
        except (IndexError, ValueError):
            colour = ()
        if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
            raise TransegError(f"{path}: line {number}: expected name:r,g,b::, got {line.strip()!r}")
        table.append((fields[0], colour))
    if not table:
        raise TransegError(f"{path}: the colour table lists no class")
    return table


def _colour_key(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]


def _decode(path: Path, table: list[tuple[str, tuple[int, int, int]]] | None, problems: Problems) -> np.ndarray:
    """One class PNG → (H, W) uint8 category indices, 255 for void and unknown colours (reported)."""
    try:
        with Image.open(path) as img:
            img.load()
            if table is None:
                if img.mode not in ("P", "L"):
                    raise TransegError(f"{path}: a {img.mode} mask needs a labelmap.txt colour table beside "
                                       "SegmentationClass/ (name:r,g,b:: per class)")
                labels = np.asarray(img, dtype=np.uint8).copy()
                unknown = np.unique(labels[(labels >= len(VOC_CLASSES)) & (labels != IGNORE_INDEX)])
                if unknown.size:
                    problems.report(path, f"value {int(unknown[0])}", f"not one of the {len(VOC_CLASSES)} VOC classes")
                    labels[np.isin(labels, unknown)] = IGNORE_INDEX
                return labels
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError) as exc:
        raise TransegError(f"{path}: cannot read the mask ({' '.join(str(exc).split())})") from None
    keys = _colour_key(rgb)
    table_keys = _colour_key(np.array([c for _, c in table]))
    known = np.isin(keys, table_keys)
    stray = np.unique(keys[~known & (keys != _colour_key(np.array(VOC_VOID)))])
    if stray.size:
        c = int(stray[0])
        problems.report(path, f"colour {(c >> 16, (c >> 8) & 255, c & 255)}", "not in the colour table")
    lookup = {int(k): i for i, k in enumerate(table_keys)}
    labels = np.full(keys.shape, IGNORE_INDEX, np.uint8)
    for key, index in lookup.items():
        labels[keys == key] = index
    return labels


def _unpack(source: Path, scratch: Path) -> Path:
    """``source`` itself when a folder; a zip export is extracted to ``scratch`` first."""
    if source.is_dir():
        return source
    if not zipfile.is_zipfile(source):
        raise TransegError(f"{source}: neither a folder nor a zip export")
    try:
        with zipfile.ZipFile(source) as archive:
            for member in archive.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise TransegError(f"{source}: unsafe path {member!r} in the archive")
            archive.extractall(scratch)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise TransegError(f"{source}: a damaged zip export ({' '.join(str(exc).split())})") from None
    return scratch


def read_masks(source: Path, image_dirs: list[Path], problems: Problems, scratch: Path) -> AnnotationSet:
    """``SegmentationClass/*.png`` of the folder or zip ``source``; classes from its ``labelmap.txt``
    (by colour) or, without one, the 21 VOC classes (by palette index); images by name in
    ``JPEGImages/`` or ``image_dirs``."""
    root = _unpack(source, scratch)
    masks_dir = root / "SegmentationClass"
    if not masks_dir.is_dir():
        raise TransegError(f"{source}: no SegmentationClass/ folder of class masks")
    table = read_labelmap(root / "labelmap.txt") if (root / "labelmap.txt").is_file() else None
    folders = [root / "JPEGImages", *image_dirs]
    images = {p.stem: p for d in folders if d.is_dir() for p in sorted(d.iterdir(), reverse=True)
              if p.suffix.lower() in IMAGE_SUFFIXES}
    entries = [
        ImageEntry(name=mask.stem, source=mask, image=images.get(mask.stem),
                   labels=lambda mask=mask: _decode(mask, table, problems))
        for mask in sorted(masks_dir.glob("*.png"))
    ]
    if not entries:
        raise TransegError(f"{masks_dir}: no PNG masks")
    names = [n for n, _ in table] if table else list(VOC_CLASSES)
    colours = [c for _, c in table] if table else [None] * len(names)
    return AnnotationSet(names, entries, colours)
