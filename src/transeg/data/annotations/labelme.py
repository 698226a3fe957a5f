"""LabelMe JSON files (one per image): polygons, rectangles and circles, the image embedded
(``imageData``, base64) or referenced (``imagePath``, relative to the JSON file)."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from transeg.data.annotations.coco import read_json
from transeg.data.annotations.common import AnnotationSet, ImageEntry, Problems, Shape, find_image, points_pairs
from transeg.data.annotations.rasterise import pil_shape
from transeg.errors import TransegError

_POINTS_NEEDED = {"polygon": 3, "rectangle": 2, "circle": 2}


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
    first appearance and one image per file. Other shape types (lines, points) carry no area and
    are left out."""
    categories: dict[str, int] = {}
    entries = []
    for path in json_files(source):
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list) or "imagePath" not in data:
            raise TransegError(f"{path}: not a LabelMe file (no 'shapes' list and 'imagePath')")
        name = str(data["imagePath"])
        entry = ImageEntry(name=name, source=path, image=find_image(name, [path.parent, *image_dirs]),
                           image_suffix=Path(name).suffix or ".png")
        if "imageHeight" in data and "imageWidth" in data:
            entry.size = (int(data["imageHeight"]), int(data["imageWidth"]))
        if data.get("imageData"):
            try:
                entry.image_bytes = base64.b64decode(data["imageData"], validate=True)
            except (binascii.Error, TypeError):
                problems.report(path, "imageData", "the embedded image is not valid base64")
        for number, shape in enumerate(data["shapes"]):
            kind = shape.get("shape_type") or "polygon"
            ident = f"shape {number} ({shape.get('label')!r})"
            if kind not in _POINTS_NEEDED:
                continue
            pairs = points_pairs(path, ident, shape.get("points"), problems)
            if pairs is None:
                continue
            if len(pairs) < _POINTS_NEEDED[kind] or (kind != "polygon" and len(pairs) != 2):
                problems.report(path, ident, f"a {kind} of {len(pairs)} point(s)")
                continue
            label = categories.setdefault(str(shape.get("label")), len(categories))
            entry.shapes.append(Shape(label, lambda h, w, kind=kind, pairs=pairs: pil_shape(kind, pairs, h, w),
                                      ident))
        entries.append(entry)
    return AnnotationSet(list(categories), entries)
