"""LabelMe JSON files (one per image): polygons, rectangles, circles, lines and points, the image embedded
(``imageData``, base64) or referenced (``imagePath``, relative to the JSON file)."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from transeg.data.annotations.coco import read_json
from transeg.data.annotations.common import AnnotationSet, ImageEntry, Problems, Shape, find_image, points_pairs
from transeg.data.annotations.rasterise import pil_shape
from transeg.data.annotations.schema import LabelMeFile, LabelMeShape, parse, parse_file
from transeg.errors import TransegError

# the number of points of each shape type (at least that many for polygons and line strips)
_POINTS_NEEDED = {"polygon": 3, "rectangle": 2, "circle": 2, "oriented_rectangle": 4, "line": 2, "linestrip": 2,
                  "point": 1}
_AT_LEAST = ("polygon", "linestrip")


def json_files(source: Path) -> list[Path]:
    """``source`` itself, or the ``*.json`` files of the folder ``source``, sorted."""
    if source.is_file():
        return [source]
    found = sorted(source.rglob("*.json")) if source.is_dir() else []
    if not found:
        raise TransegError(f"{source}: no JSON files found")
    return found


def read_labelme(source: Path, image_dirs: list[Path], problems: Problems) -> AnnotationSet:
    """The LabelMe JSON file ``source`` or those of the folder ``source`` → categories in order of
    first appearance and one image per file; every shape type is drawn as LabelMe's own
    ``shape_to_mask`` draws it (unknown types are left out)."""
    categories: dict[str, int] = {}
    entries = []
    for path in json_files(source):
        data = parse_file(LabelMeFile, read_json(path), path)
        name = data.imagePath
        entry = ImageEntry(name=name, source=path, image=find_image(name, [path.parent, *image_dirs]),
                           image_suffix=Path(name).suffix or ".png")
        if data.imageHeight and data.imageWidth:
            entry.size = (data.imageHeight, data.imageWidth)
        if data.imageData:
            try:
                entry.image_bytes = base64.b64decode(data.imageData, validate=True)
            except binascii.Error:
                problems.report(path, "imageData", "the embedded image is not valid base64")
        for number, raw in enumerate(data.shapes):
            label = raw.get("label") if isinstance(raw, dict) else None
            ident = f"shape {number} ({label!r})"
            shape = parse(LabelMeShape, raw, path, ident, problems)
            kind = shape.shape_type or "polygon" if shape else None
            if shape is None or kind not in _POINTS_NEEDED:
                continue
            pairs = points_pairs(path, ident, shape.points, problems)
            if pairs is None:
                continue
            if len(pairs) < _POINTS_NEEDED[kind] or (kind not in _AT_LEAST and len(pairs) != _POINTS_NEEDED[kind]):
                problems.report(path, ident, f"a {kind} of {len(pairs)} point(s)")
                continue
            value = categories.setdefault(shape.label, len(categories))
            entry.shapes.append(Shape(value, lambda h, w, kind=kind, pairs=pairs: pil_shape(kind, pairs, h, w),
                                      ident))
        entries.append(entry)
    return AnnotationSet(list(categories), entries)
