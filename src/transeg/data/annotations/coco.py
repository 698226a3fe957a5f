"""COCO instances or stuff JSON: polygons, uncompressed and compressed RLE, any category ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from transeg.data.annotations.common import AnnotationSet, ImageEntry, Problems, Shape, find_image, polygon_points
from transeg.data.annotations.rasterise import coco_polygon
from transeg.data.annotations.rle import counts_to_mask, decode_counts
from transeg.data.annotations.schema import CocoAnnotation, CocoFile, CocoRle, parse, parse_file
from transeg.errors import TransegError


def read_json(path: Path) -> Any:
    """A JSON file's content; a missing or malformed file is a one-line TransegError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TransegError(f"{path}: cannot read the file ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TransegError(f"{path}: not valid JSON ({exc})") from None


def _segmentation(source: Path, ident: str, seg: list[list[float]] | CocoRle, size: tuple[int, int],
                  problems: Problems):
    """The ``mask(H, W)`` of one ``segmentation`` value, or None when it is reported bad."""
    if isinstance(seg, list):
        polygons = [polygon_points(source, ident, p, problems) for p in seg]
        if not seg:
            problems.report(source, ident, "an empty segmentation")
        if not seg or any(p is None for p in polygons):
            return None

        def union(h: int, w: int) -> np.ndarray:
            return np.logical_or.reduce([coco_polygon(np.ravel(p), h, w) for p in polygons])
        return union
    if tuple(seg.size) != size:
        problems.report(source, ident, f"the RLE size {list(seg.size)} disagrees with its image's {list(size)}")
        return None
    try:
        counts = decode_counts(seg.counts) if isinstance(seg.counts, str) else seg.counts
    except ValueError as exc:
        problems.report(source, ident, f"a bad RLE ({exc})")
        return None
    if sum(counts) != size[0] * size[1]:
        problems.report(source, ident, f"a bad RLE (its runs cover {sum(counts)} pixels, not "
                        f"{size[0]}x{size[1]}={size[0] * size[1]})")
        return None
    return lambda h, w: counts_to_mask(counts, h, w)  # decoded when painted: the runs take less memory


def read_coco(source: Path, image_dirs: list[Path], problems: Problems) -> AnnotationSet:
    """A COCO JSON file → its categories (sorted by id) and images; images are looked up by
    ``file_name`` in ``image_dirs``."""
    data = parse_file(CocoFile, read_json(source), source)
    categories = sorted(data.categories, key=lambda c: c.id)
    index = {c.id: i for i, c in enumerate(categories)}
    entries: dict[int | str, ImageEntry] = {}
    for image in data.images:
        size = (image.height, image.width) if image.height and image.width else None
        entries[image.id] = ImageEntry(name=image.file_name, source=source,
                                       image=find_image(image.file_name, image_dirs), size=size)
    for number, raw in enumerate(data.annotations):
        ident = f"id {raw.get('id', f'#{number}')}" if isinstance(raw, dict) else f"#{number}"
        ann = parse(CocoAnnotation, raw, source, ident, problems)
        if ann is None:
            continue
        entry = entries.get(ann.image_id)
        if entry is None:
            problems.report(source, ident, f"unknown image id {ann.image_id!r}")
            continue
        if ann.category_id not in index:
            problems.report(source, ident, f"unknown category id {ann.category_id!r}")
            continue
        if entry.size is None:
            problems.report(source, ident, f"image {entry.name!r} declares no width and height")
            continue
        mask = _segmentation(source, ident, ann.segmentation, entry.size, problems)
        if mask is not None:
            entry.shapes.append(Shape(index[ann.category_id], mask, ident))
    return AnnotationSet([c.name for c in categories], list(entries.values()))
