"""CVAT for images 1.1 XML: ``<polygon>`` (``points="x,y;x,y;…"``) and ``<mask>`` shapes (``rle``:
comma-separated runs over the ``left/top/width/height`` box, row-major, starting with a run of
background), painted in ``z_order``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from transeg.data.annotations.common import AnnotationSet, ImageEntry, Problems, Shape, find_image, polygon_points
from transeg.data.annotations.rasterise import coco_polygon
from transeg.data.annotations.rle import counts_to_mask
from transeg.errors import TransegError


def _colour(text: str | None) -> tuple[int, int, int] | None:
    if not text or len(text) != 7 or not text.startswith("#"):
        return None
    try:
        return (int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16))
    except ValueError:
        return None


def _mask_shape(source: Path, ident: str, node: ET.Element, size: tuple[int, int], problems: Problems):
    try:
        left, top, width, height = (int(float(node.get(k, ""))) for k in ("left", "top", "width", "height"))
        runs = [int(v) for v in node.get("rle", "").split(",")]
        box = counts_to_mask(runs, height, width, order="C")
    except ValueError as exc:
        problems.report(source, ident, f"a bad mask RLE ({exc})")
        return None
    if left < 0 or top < 0 or top + height > size[0] or left + width > size[1]:
        problems.report(source, ident, f"the mask box {width}x{height}+{left}+{top} leaves the "
                        f"{size[1]}x{size[0]} image")
        return None

    def placed(h: int, w: int) -> np.ndarray:
        full = np.zeros((h, w), dtype=bool)
        full[top:top + height, left:left + width] = box
        return full
    return placed


def read_cvat_xml(source: Path, image_dirs: list[Path], problems: Problems) -> AnnotationSet:
    """An ``annotations.xml`` → its labels (in the order of ``<meta>``) and images."""
    try:
        root = ET.parse(source).getroot()
    except (OSError, ET.ParseError) as exc:
        raise TransegError(f"{source}: not a readable CVAT XML file ({exc})") from None
    labels = root.findall("./meta//labels/label")
    names = [label.findtext("name", "") for label in labels]
    index = {name: i for i, name in enumerate(names)}
    entries = []
    for image in root.iter("image"):
        name = image.get("name", "")
        try:
            size = (int(image.get("height", "")), int(image.get("width", "")))
        except ValueError:
            raise TransegError(f"{source}: image {name!r} has no integer width and height") from None
        entry = ImageEntry(name=name, source=source, image=find_image(name, image_dirs), size=size)
        for number, node in enumerate(image):
            if node.tag not in ("polygon", "mask"):
                continue
            ident = f"{node.tag} {number} of image {image.get('id')!r}"
            if node.get("label") not in index:
                problems.report(source, ident, f"unknown label {node.get('label')!r}")
                continue
            if node.tag == "polygon":
                pairs = polygon_points(source, ident, [v.split(",") for v in node.get("points", "").split(";")],
                                       problems)
                mask = None if pairs is None else (
                    lambda h, w, pairs=pairs: coco_polygon(np.ravel(pairs), h, w))
            else:
                mask = _mask_shape(source, ident, node, size, problems)
            z_order = node.get("z_order", "0")
            if not z_order.lstrip("-").isdigit():
                problems.report(source, ident, f"z_order {z_order!r} is not an integer")
            elif mask is not None:
                entry.shapes.append(Shape(index[node.get("label")], mask, ident, int(z_order)))
        entries.append(entry)
    return AnnotationSet(names, entries, [_colour(label.findtext("color")) for label in labels])
