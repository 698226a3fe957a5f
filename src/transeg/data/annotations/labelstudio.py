"""Label Studio JSON exports (a list of tasks): ``brushlabels`` results (brush RLE) and
``polygonlabels`` results (points in percent of the image), from the first annotation of each task,
or its first prediction when it has no annotation."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from transeg.data.annotations.brush import decode_mask
from transeg.data.annotations.coco import read_json
from transeg.data.annotations.common import AnnotationSet, ImageEntry, Problems, Shape, find_image, polygon_points
from transeg.data.annotations.rasterise import pil_shape
from transeg.data.annotations.schema import StudioBrush, StudioPolygon, StudioResult, StudioTask, parse, parse_file
from transeg.errors import TransegError


def image_name(url: str) -> str:
    """The file name of a task's ``data.image`` (a URL, an upload path or a ``?d=`` local path)."""
    parsed = urlparse(url)
    local = [v for k, v in (p.split("=", 1) for p in parsed.query.split("&") if "=" in p) if k == "d"]
    return Path(unquote(local[0] if local else parsed.path)).name


def _locate(name: str, image_dirs: list[Path]) -> Path | None:
    """The image, by its name or by the name Label Studio's upload prefix (``1a2b3c4d-``) hides."""
    found = find_image(name, image_dirs)
    if found is None and "-" in name:
        found = find_image(name.split("-", 1)[1], image_dirs)
    return found


def _results(task: StudioTask) -> list[Any]:
    for item in (*task.annotations, *task.completions, *task.predictions):
        if not item.get("was_cancelled") and isinstance(item.get("result"), list):
            return item["result"]
    return []


def _result_mask(source: Path, ident: str, result: StudioResult, problems: Problems):
    """The ``mask(H, W)`` and label of one result, or None when it is reported bad."""
    size = (result.original_height, result.original_width)
    if result.type == "brushlabels":
        value = parse(StudioBrush, result.value, source, ident, problems)
        if value is None:
            return None
        try:
            mask = decode_mask(value.rle, *size)
        except ValueError as exc:
            problems.report(source, ident, f"a bad brush RLE ({exc})")
            return None
        packed = np.packbits(mask)  # kept at a bit per pixel until painted
        return (lambda h, w: np.unpackbits(packed, count=h * w).reshape(h, w).astype(bool)), value.brushlabels[0]
    polygon = parse(StudioPolygon, result.value, source, ident, problems)
    pairs = None if polygon is None else polygon_points(source, ident, polygon.points, problems)
    if pairs is None:
        return None
    pixels = [(x * size[1] / 100.0, y * size[0] / 100.0) for x, y in pairs]
    return (lambda h, w: pil_shape("polygon", pixels, h, w)), polygon.polygonlabels[0]


def read_labelstudio(source: Path, image_dirs: list[Path], problems: Problems) -> AnnotationSet:
    """A Label Studio JSON export → categories in order of first appearance and one image per task."""
    tasks = read_json(source)
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise TransegError(f"{source}: not a Label Studio export (a list of tasks)")
    categories: dict[str, int] = {}
    entries = []
    for number, raw in enumerate(tasks):
        task = parse_file(StudioTask, raw, Path(f"{source} (task {number})"))
        url = next((v for v in task.data.values() if isinstance(v, str)), "")
        name = image_name(url)
        found = _locate(name, image_dirs)
        entry = ImageEntry(name=found.name if found else name, source=source, image=found)
        for raw_result in _results(task):
            result_id = raw_result.get("id") if isinstance(raw_result, dict) else None
            ident = f"result {result_id!r}"
            result = parse(StudioResult, raw_result, source, ident, problems)
            if result is None or result.type not in ("brushlabels", "polygonlabels"):
                continue
            size = (result.original_height, result.original_width)
            if entry.size is not None and size != entry.size:
                problems.report(source, ident, f"size {size[1]}x{size[0]} disagrees with the task's other results")
                continue
            entry.size = size
            made = _result_mask(source, ident, result, problems)
            if made is not None:
                mask, label = made
                entry.shapes.append(Shape(categories.setdefault(label, len(categories)), mask, ident))
        entries.append(entry)
    return AnnotationSet(list(categories), entries)
