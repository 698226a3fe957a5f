"""``transeg data import``: read one tool's export and write it as a folder dataset."""

from __future__ import annotations

import tempfile
from pathlib import Path

from transeg.data.annotations.coco import read_coco
from transeg.data.annotations.common import AnnotationSet, Problems
from transeg.data.annotations.cvat import read_cvat_xml
from transeg.data.annotations.labelme import read_labelme
from transeg.data.annotations.labelstudio import read_labelstudio
from transeg.data.annotations.layout import ImportSummary, write_layout
from transeg.data.annotations.masks import read_masks
from transeg.errors import TransegError

FORMATS = ("coco", "cvat", "labelme", "labelstudio", "voc")


def read_export(fmt: str, source: Path, image_dirs: list[Path], problems: Problems, scratch: Path) -> AnnotationSet:
    """The export ``source`` of format ``fmt``; ``cvat`` is the XML file "CVAT for images 1.1" or a
    "Segmentation mask 1.1" zip or folder. Images are looked up beside the export, then in ``image_dirs``."""
    if not source.exists():
        raise TransegError(f"{source}: no such file or folder")
    near = [source.parent if source.is_file() else source]
    near += [d / "images" for d in near]
    if fmt == "coco":
        return read_coco(source, [*image_dirs, *near], problems)
    if fmt == "labelme":
        return read_labelme(source, [*image_dirs, *near], problems)
    if fmt == "labelstudio":
        return read_labelstudio(source, [*image_dirs, *near], problems)
    if fmt == "cvat" and source.suffix.lower() == ".xml":
        return read_cvat_xml(source, [*image_dirs, *near], problems)
    if fmt in ("cvat", "voc"):
        return read_masks(source, image_dirs, problems, scratch)
    raise TransegError(f"unknown annotation format {fmt!r} (known: {', '.join(FORMATS)})")


def import_annotations(fmt: str, source: Path, out: Path, *, images: Path | None = None,
                       background: str | None = "background", overlap: str = "last", val_fraction: float = 0.2,
                       seed: int = 0, on_bad_annotation: str = "fail") -> ImportSummary:
    """Convert the export ``source`` (format ``fmt``) into a folder dataset in ``out``."""
    problems = Problems(on_bad_annotation)
    for sub in ("images", "labels"):
        if (out / sub).is_dir() and any((out / sub).iterdir()):
            raise TransegError(f"{out / sub}: already holds a dataset; import into an empty --out folder "
                               "(files left from another import would pair up with these)")
    if images is not None and not images.is_dir():
        raise TransegError(f"{images}: no such folder (--images)")
    with tempfile.TemporaryDirectory() as scratch:
        aset = read_export(fmt, source, [images] if images else [], problems, Path(scratch))
        return write_layout(aset, out, background=background, overlap=overlap, val_fraction=val_fraction,
                            seed=seed, problems=problems)
