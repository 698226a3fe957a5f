"""What every reader returns: images with their shapes (or a ready label map) and the class names,
and the collector of bad annotations that stops at the first or counts them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transeg.errors import TransegError

BAD_ANNOTATION_ACTIONS = ("fail", "skip")
MAX_COORDINATE = 100_000  # pixels: farther points are corrupt (and would cost a huge outline walk)


@dataclass
class Shape:
    """One annotated region: ``mask(H, W)`` → (H, W) bool, of category ``label`` (an index into
    ``AnnotationSet.categories``); ``order`` sorts shapes before the overlap rule (CVAT's z_order)."""

    label: int
    mask: Callable[[int, int], np.ndarray]
    ident: str
    order: int = 0


@dataclass
class ImageEntry:
    """One annotated image. ``image``: its file (None when ``image_bytes`` embeds it); ``size``:
    (H, W) the export declares, if any; ``labels``: a ready (H, W) label map of category indices
    (255 unannotated) for mask formats, else ``shapes``. ``source`` names the annotation file."""

    name: str
    source: Path
    image: Path | None
    size: tuple[int, int] | None = None
    shapes: list[Shape] = field(default_factory=list)
    labels: Callable[[], np.ndarray] | None = None
    image_bytes: bytes | None = None
    image_suffix: str = ".png"


@dataclass
class AnnotationSet:
    """The categories (names, optional RGB colours) and the images of one export."""

    categories: list[str]
    images: list[ImageEntry]
    colours: list[tuple[int, int, int] | None] = field(default_factory=list)


class Problems:
    """Bad annotations: ``report`` raises a one-line TransegError naming the file and the annotation
    (``fail``), or counts it and lets the reader go on (``skip``)."""

    def __init__(self, action: str = "fail") -> None:
        if action not in BAD_ANNOTATION_ACTIONS:
            raise TransegError(f"unknown --on-bad-annotation {action!r} (use fail or skip)")
        self.action = action
        self.count = 0
        self.first: str | None = None

    def report(self, source: Path | str, ident: str, message: str) -> None:
        line = f"{source}: annotation {ident}: {message}"
        if self.action == "fail":
            raise TransegError(line)
        self.count += 1
        self.first = self.first or line


def points_pairs(source: Path, ident: str, points: object, problems: Problems) -> list[tuple[float, float]] | None:
    """``[[x, y], …]`` or ``[x1, y1, x2, …]`` → (x, y) pairs; a bad list is reported (None)."""
    try:
        flat = np.asarray(points, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        problems.report(source, ident, f"the points {str(points)[:60]} are not numbers")
        return None
    if flat.size % 2 or not np.isfinite(flat).all():
        problems.report(source, ident, f"the points hold {flat.size} values, not finite (x, y) pairs")
        return None
    if flat.size and np.abs(flat).max() > MAX_COORDINATE:
        problems.report(source, ident, f"a point lies {np.abs(flat).max():.3g} pixels out (at most {MAX_COORDINATE})")
        return None
    return [(float(x), float(y)) for x, y in flat.reshape(-1, 2)]


def polygon_points(source: Path, ident: str, points: object, problems: Problems) -> list[tuple[float, float]] | None:
    """As ``points_pairs``, and a polygon of fewer than 3 points is reported."""
    pairs = points_pairs(source, ident, points, problems)
    if pairs is not None and len(pairs) < 3:
        problems.report(source, ident, f"a polygon of {len(pairs)} point(s); at least 3 are needed")
        return None
    return pairs


def find_image(name: str, folders: list[Path]) -> Path | None:
    """``name`` (a path as the export writes it, either slash) in the first folder that has it, trying
    its base name too; None when none does."""
    name = name.replace("\\", "/")  # LabelMe on Windows writes ..\images\a.jpg
    for folder in folders:
        for candidate in (folder / name, folder / Path(name).name):
            if candidate.is_file():
                return candidate
    return None


def image_stem(name: str) -> str:
    """The file stem of an image name as an export writes it (either slash)."""
    return Path(name.replace("\\", "/")).stem
