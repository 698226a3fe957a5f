"""Write an ``AnnotationSet`` as transeg's folder dataset: ``images/{split}/``, ``labels/{split}/``
(palette PNGs of class indices) and ``classes.yaml`` (names and palette), read back by
``transeg.data.datasets.folder``."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import ExifTags, Image
from rich.progress import Progress

from transeg.data.annotations.common import AnnotationSet, ImageEntry, Problems, image_stem
from transeg.data.annotations.rasterise import paint
from transeg.data.images import save_label_png
from transeg.data.labels import IGNORE_INDEX, default_palette
from transeg.errors import TransegError


@dataclass
class ImportSummary:
    """What ``write_layout`` wrote: images per split, the classes, and the bad annotations skipped."""

    splits: dict[str, int]
    classes: list[str]
    skipped: int
    first_problem: str | None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` beside ``path`` then rename over it: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def class_table(aset: AnnotationSet, background: str | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The dataset's classes, (N, 3) palette and the (256,) table from category index (255:
    unannotated) to class index: unannotated pixels go to ``background`` (added as class 0 unless a
    category has that name) or, with None, stay 255 (ignored)."""
    names = list(aset.categories)
    colours = list(aset.colours) + [None] * (len(names) - len(aset.colours))
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    offset = 0
    if background is not None and background in names:
        lut[IGNORE_INDEX] = names.index(background)
    elif background is not None:
        names, colours, offset = [background, *names], [(0, 0, 0), *colours], 1
        lut[IGNORE_INDEX] = 0
    if len(names) > 255:
        raise TransegError(f"{len(names)} classes; a folder dataset holds at most 255")
    lut[: len(aset.categories)] = np.arange(len(aset.categories)) + offset
    fallback = default_palette(len(names))
    palette = np.array([c if c is not None else fallback[i] for i, c in enumerate(colours)], np.uint8)
    return names, palette, lut


def _image_size(entry: ImageEntry) -> tuple[int, int]:
    """(H, W) of the entry's image as ``read_image`` gives it: upright per its EXIF orientation (as
    the labelling tools show it), from the header alone."""
    try:
        with Image.open(io.BytesIO(entry.image_bytes) if entry.image_bytes is not None else entry.image) as img:
            turned = img.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
            return (img.width, img.height) if turned else (img.height, img.width)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise TransegError(f"{entry.image or entry.source}: cannot read the image ({exc})") from None


def _label_map(entry: ImageEntry, size: tuple[int, int], overlap: str, problems: Problems) -> np.ndarray | None:
    """(H, W) category indices (255 unannotated) of ``entry``, or None when reported bad."""
    if entry.labels is not None:
        labels = entry.labels()
        if labels.shape != size:
            problems.report(entry.source, f"image {entry.name!r}", f"the mask is {labels.shape[1]}x{labels.shape[0]} "
                            f"but the image {size[1]}x{size[0]}")
            return None
        return labels
    shapes = sorted(entry.shapes, key=lambda s: s.order)
    return paint([(s.mask(*size), s.label) for s in shapes], *size, rule=overlap)


def _usable(entry: ImageEntry, problems: Problems, seen: dict[str, ImageEntry]) -> tuple[int, int] | None:
    """The image size when ``entry`` can be written; a missing image, a size disagreeing with the
    export, or a second name for the same output stem is reported (None)."""
    ident = f"image {entry.name!r}"
    if entry.image is None and entry.image_bytes is None:
        problems.report(entry.source, ident, "the image file is not found (pass its folder with --images)")
        return None
    stem = image_stem(entry.name)
    other = seen.get(stem)
    if other is not None:
        problems.report(entry.source, ident, f"the same image {stem!r} is named {other.name!r} in {other.source}")
        return None
    size = _image_size(entry)
    if entry.size is not None and entry.size != size:
        problems.report(entry.source, ident, f"the export says {entry.size[1]}x{entry.size[0]} but the image is "
                        f"{size[1]}x{size[0]}")
        return None
    seen[stem] = entry
    return size


def split_names(count: int, val_fraction: float, seed: int) -> list[str]:
    """'train' or 'val' for each of ``count`` images: ``round(count · val_fraction)`` of them (at least
    one when the fraction is positive and there are two images) drawn at random with ``seed``."""
    val = round(count * val_fraction)
    if val_fraction > 0 and count > 1:
        val = min(max(val, 1), count - 1)
    chosen = set(np.random.default_rng(seed).permutation(count)[:val].tolist())
    return ["val" if i in chosen else "train" for i in range(count)]


def write_layout(aset: AnnotationSet, out: Path, *, background: str | None = "background", overlap: str = "last",
                 val_fraction: float = 0.2, seed: int = 0, problems: Problems | None = None) -> ImportSummary:
    """Write ``aset`` to ``out`` as a folder dataset; returns what was written."""
    problems = problems or Problems()
    names, palette, lut = class_table(aset, background)
    png_palette = default_palette(256)  # all 256 entries: a shorter palette lets Pillow save fewer bits
    png_palette[: len(palette)] = palette  # per pixel, which would fold the ignore value 255 into a class
    void_lut = lut.copy()
    void_lut[IGNORE_INDEX] = IGNORE_INDEX
    seen: dict[str, ImageEntry] = {}
    ready = []
    with Progress(transient=True, disable=len(aset.images) < 20) as progress:
        task = progress.add_task("import", total=len(aset.images))
        for entry in aset.images:
            size = _usable(entry, problems, seen)
            labels = None if size is None else _label_map(entry, size, overlap, problems)
            if labels is not None:  # in a mask export 255 is void (ignored), never "unannotated"
                ready.append((entry, (void_lut if entry.labels is not None else lut)[labels]))
            progress.advance(task)
    if not ready:
        raise TransegError(f"no image could be imported ({problems.first or 'the export lists none'})")
    splits = split_names(len(ready), val_fraction, seed)
    for (entry, labels), split in zip(ready, splits, strict=True):
        stem = image_stem(entry.name)
        suffix = Path(entry.image).suffix if entry.image is not None else entry.image_suffix
        image_path = out / "images" / split / f"{stem}{suffix.lower()}"
        if entry.image is not None:
            atomic_write(image_path, lambda tmp, src=entry.image: shutil.copyfile(src, tmp))
        else:
            atomic_write(image_path, lambda tmp, data=entry.image_bytes: tmp.write_bytes(data))
        label_path = out / "labels" / split / f"{stem}.png"
        atomic_write(label_path, lambda tmp, lab=labels: save_label_png(lab, tmp, png_palette))
    text = yaml.safe_dump({"classes": names, "palette": palette.tolist()}, sort_keys=False)
    atomic_write(out / "classes.yaml", lambda tmp: tmp.write_text(text))
    counts = {s: splits.count(s) for s in ("train", "val") if s in splits}
    return ImportSummary(counts, names, problems.count, problems.first)

