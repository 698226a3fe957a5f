"""Label maps → the import formats of the labelling tools, so predictions load as pre-annotations:
a COCO annotations file (one compressed-RLE annotation per class and image), a Label Studio task
list with brush predictions, and a CVAT "Segmentation mask 1.1" zip."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from transeg.data.annotations import brush, rle
from transeg.data.annotations.layout import atomic_write
from transeg.data.annotations.masks import VOC_VOID
from transeg.data.images import read_label
from transeg.data.labels import default_palette

EXPORT_FORMATS = ("png", "coco", "labelstudio", "cvat")
EXPORT_FILES = {"coco": "coco.json", "labelstudio": "labelstudio.json", "cvat": "cvat-masks.zip"}

Pairs = Sequence[tuple[Path, Path]]  # (image, its label map PNG)


def _present(labels: np.ndarray, num_classes: int) -> list[int]:
    return [int(c) for c in np.unique(labels) if c < num_classes]


def coco_export(pairs: Pairs, classes: Sequence[str]) -> dict:
    """A COCO annotations dict: category ids 1..K in class order, one RLE annotation per class present."""
    images, annotations = [], []
    for image_id, (image, label_path) in enumerate(pairs, 1):
        labels = read_label(label_path)
        images.append({"id": image_id, "file_name": image.name, "height": labels.shape[0], "width": labels.shape[1]})
        for c in _present(labels, len(classes)):
            mask = labels == c
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": c + 1,
                                "segmentation": rle.encode_mask(mask), "area": int(mask.sum()), "bbox": bbox,
                                "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def labelstudio_export(pairs: Pairs, classes: Sequence[str], model_version: str) -> list[dict]:
    """Label Studio tasks, one per image, each with a prediction of one brush result per class present
    (``from_name`` "tag", ``to_name`` "image": the names of the default brush labelling config)."""
    tasks = []
    for number, (image, label_path) in enumerate(pairs):
        labels = read_label(label_path)
        h, w = labels.shape
        results = [{"id": f"r{number}-{c}", "from_name": "tag", "to_name": "image", "type": "brushlabels",
                    "original_width": w, "original_height": h, "image_rotation": 0,
                    "value": {"format": "rle", "rle": brush.encode_mask(labels == c), "brushlabels": [classes[c]]}}
                   for c in _present(labels, len(classes))]
        tasks.append({"data": {"image": f"/data/local-files/?d={image.name}"},
                      "predictions": [{"model_version": model_version, "result": results}]})
    return tasks


def unique_palette(palette: np.ndarray | None, num_classes: int) -> np.ndarray:
    """``palette`` when its colours are distinct (a colour mask needs that), else the VOC palette."""
    if palette is not None and len({tuple(c) for c in np.asarray(palette)[:num_classes]}) == num_classes:
        return np.asarray(palette, np.uint8)[:num_classes]
    return default_palette(num_classes)


def cvat_export(pairs: Pairs, classes: Sequence[str], palette: np.ndarray | None) -> bytes:
    """A CVAT "Segmentation mask 1.1" zip: ``labelmap.txt``, ``SegmentationClass/<stem>.png`` colour
    masks and ``ImageSets/Segmentation/default.txt``."""
    colours = unique_palette(palette, len(classes))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        table = "".join(f"{name}:{','.join(str(v) for v in colours[i])}::\n" for i, name in enumerate(classes))
        archive.writestr("labelmap.txt", "# label:color_rgb:parts:actions\n" + table)
        for image, label_path in pairs:
            labels = read_label(label_path)
            png = io.BytesIO()
            rgb = np.vstack([colours, [VOC_VOID]])[np.minimum(labels, len(classes))]  # beyond the classes: void
            Image.fromarray(rgb.astype(np.uint8)).save(png, format="PNG")
            archive.writestr(f"SegmentationClass/{image.stem}.png", png.getvalue())
        archive.writestr("ImageSets/Segmentation/default.txt", "".join(f"{img.stem}\n" for img, _ in pairs))
    return buffer.getvalue()


def write_export(fmt: str, pairs: Pairs, out_dir: Path, classes: Sequence[str], palette: np.ndarray | None,
                 model_version: str = "transeg") -> Path:
    """Write the ``fmt`` export of ``pairs`` to ``out_dir / EXPORT_FILES[fmt]`` atomically; returns it."""
    path = out_dir / EXPORT_FILES[fmt]
    if fmt == "coco":
        text = json.dumps(coco_export(pairs, classes))
    elif fmt == "labelstudio":
        text = json.dumps(labelstudio_export(pairs, classes, model_version))
    else:
        data = cvat_export(pairs, classes, palette)
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
        return path
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path
