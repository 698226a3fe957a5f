"""COCO instances or stuff JSON: polygons, uncompressed and compressed RLE, any category ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from transeg.data.annotations.common import AnnotationSet, ImageEntry, Problems, Shape, find_image, polygon_points
from transeg.data.annotations.rasterise import coco_polygon
from transeg.data.annotations.rle import counts_to_mask, decode_counts
from transeg.errors import TransegError


def read_json(path: Path) -> Any:
    """A JSON file's content; a missing or malformed file is a one-line TransegError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TransegError(f"{path}: cannot read the file ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TransegError(f"{path}: not valid JSON ({exc})") from None


def _segmentation(source: Path, ident: str, seg: Any, size: tuple[int, int], problems: Problems):
    """The ``mask(H, W)`` of one ``segmentation`` value, or None when it is reported bad."""
    if isinstance(seg, list):
        polygons = [polygon_points(source, ident, p, problems) for p in seg]
        if not seg or any(p is None for p in polygons):
            if not seg:
                problems.report(source, ident, "an empty segmentation")
            return None

        def union(h: int, w: int) -> np.ndarray:
            return np.logical_or.reduce([coco_polygon(np.ravel(p), h, w) for p in polygons])
        return union
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        rle_size = tuple(seg["size"]) if isinstance(seg["size"], list) else None
        if rle_size != size:
            problems.report(source, ident, f"the RLE size {seg['size']} disagrees with its image's {list(size)}")
            return None
        try:
            counts = decode_counts(seg["counts"]) if isinstance(seg["counts"], str) else list(seg["counts"])
            mask = counts_to_mask(counts, *size)
        except (ValueError, TypeError) as exc:
            problems.report(source, ident, f"a bad RLE ({exc})")
            return None
        return lambda h, w: mask
    problems.report(source, ident, f"segmentation is neither polygons nor RLE: {str(seg)[:60]}")
    return None


def read_coco(source: Path, image_dirs: list[Path], problems: Problems) -> AnnotationSet:
    """A COCO JSON file → its categories (sorted by id) and images; images are looked up by
    ``file_name`` in ``image_dirs``."""
    data = read_json(source)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise TransegError(f"{source}: not a COCO annotations file (no 'images' and 'categories' lists)")
    categories = sorted(data["categories"], key=lambda c: c.get("id", 0))
    index = {c["id"]: i for i, c in enumerate(categories)}
    entries: dict[Any, ImageEntry] = {}
    for image in data["images"]:
        name = str(image.get("file_name", ""))
        entries[image.get("id")] = ImageEntry(
            name=name, source=source, image=find_image(name, image_dirs),
            size=(int(image["height"]), int(image["width"])) if "height" in image and "width" in image else None)
    for ann in data.get("annotations", []):
        ident = f"id {ann.get('id')}"
        entry = entries.get(ann.get("image_id"))
        if entry is None:
            problems.report(source, ident, f"unknown image id {ann.get('image_id')!r}")
            continue
        if ann.get("category_id") not in index:
            problems.report(source, ident, f"unknown category id {ann.get('category_id')!r}")
            continue
        if entry.size is None:
            problems.report(source, ident, f"image {entry.name!r} declares no width and height")
            continue
        mask = _segmentation(source, ident, ann.get("segmentation"), entry.size, problems)
        if mask is not None:
            entry.shapes.append(Shape(index[ann["category_id"]], mask, ident))
    return AnnotationSet([str(c.get("name", c["id"])) for c in categories], list(entries.values()))
