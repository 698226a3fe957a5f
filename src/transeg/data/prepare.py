"""Converters writing train-id label maps from the raw ids some datasets ship
(Cityscapes ``labelIds``, COCO-Stuff 0-181)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from transeg.data.datasets import find_nested_dir, require_dir
from transeg.data.images import read_label
from transeg.data.labels import CITYSCAPES_LUT, COCO_STUFF_LUT, apply_lut
from transeg.errors import TransegError


def convert_cityscapes_label_ids(label_ids: np.ndarray) -> np.ndarray:
    """(H, W) Cityscapes labelIds (0..33, −1) → (H, W) uint8 trainIds (0..18, others 255)."""
    return apply_lut(CITYSCAPES_LUT, np.asarray(label_ids))


def convert_coco_stuff_label_ids(label_ids: np.ndarray) -> np.ndarray:
    """(H, W) raw COCO-Stuff ids (0..181, 255 unlabelled) → (H, W) uint8 train ids (0..170, 255)."""
    return apply_lut(COCO_STUFF_LUT, np.asarray(label_ids))


def _convert_files(sources: Iterable[Path], suffix: str, new_suffix: str,
                   convert: Callable[[np.ndarray], np.ndarray]) -> int:
    """Write ``convert(read_label(src))`` as an 8-bit PNG beside each source, renaming its suffix."""
    count = 0
    for source in sources:
        target = source.with_name(source.name[: -len(suffix)] + new_suffix)
        try:
            Image.fromarray(convert(read_label(source))).save(target, format="PNG")
        except OSError as exc:
            raise TransegError(f"{target}: cannot write ({exc.strerror or exc})") from None
        count += 1
    return count


def convert_cityscapes(root: str | Path) -> int:
    """Write ``*_gtFine_labelTrainIds.png`` beside every ``*_gtFine_labelIds.png`` under
    ``root/gtFine`` (or ``root`` itself); returns the number of files written."""
    gt_dir = find_nested_dir(Path(root), "gtFine")
    sources = sorted(gt_dir.rglob("*_gtFine_labelIds.png"))
    if not sources:
        raise TransegError(f"{gt_dir}: no *_gtFine_labelIds.png found (expected gtFine/{{split}}/{{city}}/)")
    return _convert_files(sources, "_labelIds.png", "_labelTrainIds.png", convert_cityscapes_label_ids)


def convert_coco_stuff164k(root: str | Path) -> int:
    """Write ``NAME_labelTrainIds.png`` beside every raw ``NAME.png`` in
    ``root/annotations/{train2017,val2017}``; returns the number of files written."""
    label_root = require_dir(Path(root) / "annotations", "annotations/{train2017,val2017}/*.png")
    sources = [p for sub in ("train2017", "val2017") for p in sorted((label_root / sub).glob("*.png"))
               if not p.name.endswith("_labelTrainIds.png")]
    if not sources:
        raise TransegError(f"{label_root}: no raw *.png label maps in train2017/ or val2017/")
    return _convert_files(sources, ".png", "_labelTrainIds.png", convert_coco_stuff_label_ids)
