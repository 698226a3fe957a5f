"""Label Studio JSON exports (a list of tasks): ``brushlabels`` results (brush RLE) and
``polygonlabels`` results (points in percent of the image), from the first annotation of each task,
or its first prediction when it has no annotation."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from transeg.data.annotations.brush import decode_mask
from transeg.data.annotations.coco import read_json
from transeg.data.annotations.common import AnnotationSet, ImageEntry, Problems, Shape, find_image, polygon_points
from transeg.data.annotations.rasterise import pil_shape
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


def _results(task: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("annotations", "completions", "predictions"):
        for item in task.get(key) or []:
            if isinstance(item, dict) and not item.get("was_cancelled"):
                return list(item.get("result") or [])
    return []


def _result_mask(source: Path, result: dict[str, Any], size: tuple[int, int], problems: Problems):
    ident = f"result {result.get('id')!r}"
    value = result.get("value") or {}
    if result.get("type") == "brushlabels":
        try:
            mask = decode_mask(value.get("rle") or [], *size)
        except (ValueError, TypeError) as exc:
            problems.report(source, ident, f"a bad brush RLE ({exc})")
            return None
        return lambda h, w: mask
    pairs = polygon_points(source, ident, value.get("points"), problems)
    if pairs is None:
        return None
    h, w = size
    pixels = [(x * w / 100.0, y * h / 100.0) for x, y in pairs]
    return lambda hh, ww: pil_shape("polygon", pixels, hh, ww)


def read_labelstudio(source: Path, image_dirs: list[Path], problems: Problems) -> AnnotationSet:
    """A Label Studio JSON export → categories in order of first appearance and one image per task."""
    tasks = read_json(source)
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "data" in t for t in tasks):
        raise TransegError(f"{source}: not a Label Studio export (a list of tasks with 'data')")
    categories: dict[str, int] = {}
    entries = []
    for task in tasks:
        url = next((v for v in task["data"].values() if isinstance(v, str)), "")
        name = image_name(url)
        found = _locate(name, image_dirs)
        entry = ImageEntry(name=found.name if found else name, source=source, image=found)
        for result in _results(task):
            kind = result.get("type")
            if kind not in ("brushlabels", "polygonlabels"):
                continue
            size = (int(result.get("original_height", 0)), int(result.get("original_width", 0)))
            if entry.size is not None and size != entry.size:
                problems.report(source, f"result {result.get('id')!r}",
                                f"size {size[1]}x{size[0]} disagrees with the task's other results")
                continue
            entry.size = size
            names = (result.get("value") or {}).get(kind) or []
            mask = _result_mask(source, result, size, problems)
            if mask is not None and names:
                entry.shapes.append(Shape(categories.setdefault(str(names[0]), len(categories)), mask,
                                          f"result {result.get('id')!r}"))
        entries.append(entry)
    return AnnotationSet(list(categories), entries)
