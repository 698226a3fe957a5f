"""Segmentation datasets: (image, label map) pairs with class names, palette and a label mapping.

Every dataset is a :class:`SegmentationDataset`; the constructors below find the pairs of the
standard layouts (ADE20K, Cityscapes, COCO-Stuff 164k, Pascal Context, CamVid) or of a generic
``images/``+``labels/`` folder described by a YAML file. Label maps are remapped at load with a
256-entry lookup table so that, afterwards, classes are ``0..num_classes-1`` and 255 is ignored.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch.utils.data import Dataset

from transeg.data.images import IMAGE_SUFFIXES, read_image, read_label
from transeg.data.labels import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    CAMVID_CLASSES,
    CAMVID_PALETTE,
    CAMVID_VOID,
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    COCO_STUFF_CLASSES,
    IGNORE_INDEX,
    PASCAL_CONTEXT60_CLASSES,
    PASCAL_CONTEXT60_PALETTE,
    PASCAL_CONTEXT_CLASSES,
    apply_lut,
    default_palette,
    identity_lut,
    lut_from_mapping,
    reduce_zero_label_lut,
)
from transeg.data.rasters import read_raster
from transeg.errors import TransegError

Transform = Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]


# --------------------------------------------------------------------------- the dataset
class SegmentationDataset(Dataset):
    """(image, label map) pairs. ``dataset[i]`` is ``{"image": (H, W, 3) uint8, "label": (H, W)
    uint8, "path": str}`` after the label table, then ``transform(sample, rng)`` if given.

    The generator of sample ``i`` is seeded with ``(seed, epoch, i)``: augmentation is
    reproducible whatever the worker count; call :meth:`set_epoch` each epoch for fresh draws.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | Path, str | Path | None]],
        classes: Sequence[str],
        *,
        palette: np.ndarray | Sequence[Sequence[int]] | None = None,
        label_lut: np.ndarray | None = None,
        ignore_index: int = IGNORE_INDEX,
        transform: Transform | None = None,
        name: str = "dataset",
        seed: int = 0,
        bands: int = 3,
    ) -> None:
        self.samples = [(Path(img), None if lbl is None else Path(lbl)) for img, lbl in samples]
        self.classes = tuple(classes)
        self.palette = np.asarray(default_palette(len(classes)) if palette is None else palette, np.uint8)
        if self.palette.shape != (len(self.classes), 3):
            raise TransegError(f"{name}: palette shape {self.palette.shape} != ({len(self.classes)}, 3)")
        self.label_lut = identity_lut() if label_lut is None else np.asarray(label_lut, np.uint8)
        self.ignore_index = ignore_index
        self.transform = transform
        self.name = name
        self.seed = seed
        self.bands = bands
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"SegmentationDataset({self.name!r}, {len(self)} samples, {self.num_classes} classes)"

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (like ``DistributedSampler.set_epoch``)."""
        self.epoch = epoch

    def map_label(self, raw: np.ndarray) -> np.ndarray:
        """(H, W) raw label values → (H, W) uint8 train ids through the label table; values beyond
        8 bits become ignore (``load`` and ``check_dataset`` report them)."""
        return apply_lut(self.label_lut, raw)

    def load(self, index: int) -> dict[str, Any]:
        """Sample ``index`` read from disk with the label table applied, before any transform."""
        image_path, label_path = self.samples[index]
        image = read_image(image_path) if self.bands == 3 else self._read_bands(image_path)
        sample: dict[str, Any] = {"image": image, "path": str(image_path)}
        if label_path is not None:
            raw = read_label(label_path)
            check_same_size(image_path, image.shape[:2], label_path, raw.shape)
            sample["label"] = self._valid_label(raw, label_path)
        return sample

    def _read_bands(self, path: Path) -> np.ndarray:
        """An (H, W, bands) raster of its own dtype (TIFF through tifffile)."""
        image = read_raster(path)
        if image.shape[2] != self.bands:
            raise TransegError(f"{path}: the image has {image.shape[2]} bands, the dataset {self.bands}")
        return image

    def load_label(self, index: int) -> np.ndarray | None:
        """The (H, W) uint8 label map of sample ``index`` (None when it has none), mapped and
        checked as ``load`` does, without reading the image."""
        label_path = self.samples[index][1]
        return None if label_path is None else self._valid_label(read_label(label_path), label_path)

    def _valid_label(self, raw: np.ndarray, label_path: Path) -> np.ndarray:
        """The mapped label map; a TransegError naming the file when a value is neither a class nor
        ignore (the check of ``transeg data check``, see ``invalid_label_values``)."""
        label = self.map_label(raw)
        values = invalid_label_values(raw, label, self.num_classes, self.ignore_index)
        if values:
            raise TransegError(
                f"{label_path}: label value(s) {values} outside the {self.num_classes} classes "
                f"[0, {self.num_classes - 1}] and not the ignore value {self.ignore_index}; "
                "run `transeg data check` on the config for hints"
            )
        return label

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load(index)
        if self.transform is None:
            return sample
        return self.transform(sample, np.random.default_rng([self.seed, self.epoch, index]))


def invalid_label_values(raw: np.ndarray, mapped: np.ndarray, num_classes: int, ignore_index: int) -> list[int]:
    """The values of an (H, W) label map that are neither a class nor ignore, sorted: values of the
    mapped map outside ``[0, num_classes)`` other than ``ignore_index``, and raw values beyond 8
    bits (16-bit maps), which no 256-entry label table maps and ``map_label`` would silently ignore."""
    mapped_hist = np.bincount(mapped.ravel(), minlength=256)
    bad = [int(v) for v in np.flatnonzero(mapped_hist[num_classes:]) + num_classes if v != ignore_index]
    if raw.dtype != np.uint8:
        bad += [int(v) for v in np.unique(raw[raw > 255])]
    return sorted(bad)


def check_same_size(
    image_path: Path, image_hw: Sequence[int], label_path: Path, label_hw: Sequence[int]
) -> None:
    """TransegError naming both files when an image and its label map differ in size."""
    if tuple(image_hw) != tuple(label_hw):
        raise TransegError(
            f"{image_path} is {image_hw[1]}x{image_hw[0]} but its label map {label_path} is "
            f"{label_hw[1]}x{label_hw[0]} (width x height): they must match"
        )


# --------------------------------------------------------------------------- finding pairs
def _few(names: Sequence[str], count: int = 5) -> str:
    shown = ", ".join(names[:count])
    return shown + (f", … ({len(names) - count} more)" if len(names) > count else "")


def require_dir(folder: Path, layout: str) -> Path:
    if not folder.is_dir():
        raise TransegError(f"{folder}: folder not found (expected {layout})")
    return folder


def _index(folder: Path, pattern: str, suffix: str, recursive: bool = False) -> dict[str, Path]:
    """Files in ``folder`` matching ``pattern``, keyed by their path relative to it minus ``suffix``."""
    found = {}
    for path in sorted(folder.rglob(pattern) if recursive else folder.glob(pattern)):
        if path.is_file():
            found[path.relative_to(folder).as_posix()[: -len(suffix)]] = path
    return found


def _pair(images: dict[str, Path], labels: dict[str, Path], image_dir: Path, label_dir: Path) -> list:
    """Sorted (image, label) pairs with equal keys; TransegError when either side is empty or unmatched."""
    if not images:
        raise TransegError(f"{image_dir}: no images found")
    if not labels:
        raise TransegError(f"{label_dir}: no label maps found")
    no_label = sorted(images.keys() - labels.keys())
    no_image = sorted(labels.keys() - images.keys())
    if no_label or no_image:
        parts = [f"{len(no_label)} images without a label ({_few(no_label)})"] if no_label else []
        parts += [f"{len(no_image)} labels without an image ({_few(no_image)})"] if no_image else []
        raise TransegError(f"{image_dir} and {label_dir} do not pair up: {'; '.join(parts)}")
    return [(images[key], labels[key]) for key in sorted(images)]


def _pair_jpg_png(image_dir: Path, label_dir: Path) -> list:
    """Pairs of ``image_dir/NAME.jpg`` and ``label_dir/NAME.png``."""
    return _pair(_index(image_dir, "*.jpg", ".jpg"), _index(label_dir, "*.png", ".png"), image_dir, label_dir)


def _split_name(split: str, aliases: Mapping[str, str], dataset: str) -> str:
    if split in aliases.values():
        return split
    if split not in aliases:
        raise TransegError(f"{dataset}: unknown split {split!r} (use one of {sorted(aliases)})")
    return aliases[split]


def _images_by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def find_nested_dir(root: Path, name: str) -> Path:
    """``root/name`` when it exists, else ``root`` (accept either the dataset folder or its parent)."""
    return root / name if (root / name).is_dir() else root


# --------------------------------------------------------------------------- constructors
def ade20k(root: str | Path, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """ADE20K (SceneParse150): ``ADEChallengeData2016/{images,annotations}/{training,validation}``;
    0 ("other") is ignored and 1..150 become 0..149 (reduce_zero_label)."""
    base = find_nested_dir(Path(root), "ADEChallengeData2016")
    sub = _split_name(split, {"train": "training", "val": "validation"}, "ade20k")
    layout = "ADEChallengeData2016/images/{training,validation}/*.jpg and annotations/…/*.png"
    image_dir = require_dir(base / "images" / sub, layout)
    label_dir = require_dir(base / "annotations" / sub, layout)
    pairs = _pair_jpg_png(image_dir, label_dir)
    return SegmentationDataset(pairs, ADE20K_CLASSES, palette=ADE20K_PALETTE,
                               label_lut=reduce_zero_label_lut(), transform=transform, name=f"ade20k/{split}")


def cityscapes(root: str | Path, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """Cityscapes fine: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with
    ``gtFine/{split}/{city}/*_gtFine_labelTrainIds.png`` (made by ``transeg.data.prepare.convert_cityscapes``)."""
    root = Path(root)
    layout = "leftImg8bit/{split}/{city}/*_leftImg8bit.png and gtFine/{split}/{city}/*_labelTrainIds.png"
    image_dir = require_dir(root / "leftImg8bit" / split, layout)
    label_dir = require_dir(root / "gtFine" / split, layout)
    labels = _index(label_dir, "*_gtFine_labelTrainIds.png", "_gtFine_labelTrainIds.png", recursive=True)
    if not labels and any(label_dir.rglob("*_gtFine_labelIds.png")):
        raise TransegError(f"{label_dir}: no *_gtFine_labelTrainIds.png, only *_labelIds.png: convert them "
                           "first with transeg.data.prepare.convert_cityscapes")
    images = _index(image_dir, "*_leftImg8bit.png", "_leftImg8bit.png", recursive=True)
    return SegmentationDataset(_pair(images, labels, image_dir, label_dir), CITYSCAPES_CLASSES,
                               palette=CITYSCAPES_PALETTE, transform=transform, name=f"cityscapes/{split}")


def coco_stuff164k(root: str | Path, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """COCO-Stuff 164k: ``images/{train2017,val2017}/*.jpg`` with
    ``annotations/…/*_labelTrainIds.png`` (0..170, 255 unlabelled; see :func:`convert_coco_stuff164k`)."""
    root = Path(root)
    sub = _split_name(split, {"train": "train2017", "val": "val2017"}, "coco_stuff164k")
    layout = "images/{train2017,val2017}/*.jpg and annotations/…/*_labelTrainIds.png"
    image_dir = require_dir(root / "images" / sub, layout)
    label_dir = require_dir(root / "annotations" / sub, layout)
    labels = _index(label_dir, "*_labelTrainIds.png", "_labelTrainIds.png")
    if not labels and any(label_dir.glob("*.png")):
        raise TransegError(f"{label_dir}: no *_labelTrainIds.png, only raw *.png: convert them first "
                           "with transeg.data.datasets.convert_coco_stuff164k")
    pairs = _pair(_index(image_dir, "*.jpg", ".jpg"), labels, image_dir, label_dir)
    return SegmentationDataset(pairs, COCO_STUFF_CLASSES, transform=transform, name=f"coco_stuff164k/{split}")


def _pascal_context_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """Pairs listed in ``VOC2010/ImageSets/SegmentationContext/{split}.txt`` (root: VOC2010 or its parent)."""
    base = find_nested_dir(Path(root), "VOC2010")
    layout = "VOC2010/{JPEGImages,SegmentationClassContext,ImageSets/SegmentationContext}"
    image_dir = require_dir(base / "JPEGImages", layout)
    label_dir = require_dir(base / "SegmentationClassContext", layout)
    list_file = base / "ImageSets" / "SegmentationContext" / f"{split}.txt"
    if not list_file.is_file():
        raise TransegError(f"{list_file}: split list not found (expected {layout}/{split}.txt)")
    names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    if not names:
        raise TransegError(f"{list_file}: the split list is empty")
    images = {n: image_dir / f"{n}.jpg" for n in names}
    labels = {n: label_dir / f"{n}.png" for n in names}
    for kind, files, folder in (("image", images, image_dir), ("label map", labels, label_dir)):
        missing = [n for n, p in files.items() if not p.is_file()]
        if missing:
            raise TransegError(f"{list_file}: {len(missing)} listed names have no {kind} in {folder} "
                               f"({_few(missing)})")
    return [(images[n], labels[n]) for n in names]


def pascal_context(root: str | Path, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """Pascal Context, 59 classes: background (0) is ignored (reduce_zero_label), mmseg layout."""
    return SegmentationDataset(_pascal_context_pairs(root, split), PASCAL_CONTEXT_CLASSES,
                               palette=PASCAL_CONTEXT60_PALETTE[1:], label_lut=reduce_zero_label_lut(),
                               transform=transform, name=f"pascal_context/{split}")


def pascal_context60(root: str | Path, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """Pascal Context, 60 classes including background (0), no label reduction."""
    return SegmentationDataset(_pascal_context_pairs(root, split), PASCAL_CONTEXT60_CLASSES,
                               palette=PASCAL_CONTEXT60_PALETTE, transform=transform,
                               name=f"pascal_context60/{split}")


def camvid(root: str | Path, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """CamVid (SegNet version): ``images/{split}/NAME.jpg``, ``labels/{split}/NAME.png``, 11 classes,
    void (11) ignored."""
    root = Path(root)
    layout = "images/{split}/NAME.jpg and labels/{split}/NAME.png"
    image_dir = require_dir(root / "images" / split, layout)
    label_dir = require_dir(root / "labels" / split, layout)
    pairs = _pair_jpg_png(image_dir, label_dir)
    return SegmentationDataset(pairs, CAMVID_CLASSES, palette=CAMVID_PALETTE,
                               label_lut=lut_from_mapping({CAMVID_VOID: IGNORE_INDEX}),
                               transform=transform, name=f"camvid/{split}")


FOLDER_KEYS = ("classes", "palette", "reduce_zero_label", "ignore_index", "label_map", "bands")


def folder(
    root: str | Path, split: str, classes_yaml: str | Path | None = None, transform: Transform | None = None
) -> SegmentationDataset:
    """Any dataset laid out as ``root/images/{split}/*`` + ``root/labels/{split}/*.png`` (paired by
    file stem) and described by a YAML file::

        classes: [background, foreground]     # required, in label-value order
        palette: [[0, 0, 0], [255, 0, 0]]     # optional, one RGB colour per class
        reduce_zero_label: false              # optional: true when 0 means "unlabelled", 1.. classes
        ignore_index: 255                     # optional: the raw value meaning "unlabelled"
        label_map: {255: 1}                   # optional: raw value → class, applied last
        bands: 5                              # optional: N-band TIFF images (default 3: RGB images)

    Binary masks stored 0/255 need ``label_map: {255: 1}``: otherwise 255 is "ignore" and the
    foreground is never learned. After mapping, the ignore value is always 255. The YAML file
    defaults to ``root/classes.yaml``.
    """
    options = _read_folder_yaml(Path(root) / "classes.yaml" if classes_yaml is None else Path(classes_yaml))
    root = Path(root)
    layout = "images/{split}/* and labels/{split}/*.png"
    image_dir = require_dir(root / "images" / split, layout)
    label_dir = require_dir(root / "labels" / split, layout)
    pairs = _pair(_images_by_stem(image_dir), _index(label_dir, "*.png", ".png"), image_dir, label_dir)
    lut = reduce_zero_label_lut() if options["reduce_zero_label"] else identity_lut()
    lut[options["ignore_index"]] = IGNORE_INDEX
    lut = lut_from_mapping(options["label_map"], lut)
    return SegmentationDataset(pairs, options["classes"], palette=options["palette"], label_lut=lut,
                               transform=transform, name=f"{root.name}/{split}", bands=options["bands"])


def _read_folder_yaml(path: Path) -> dict[str, Any]:
    """The validated options of a ``folder`` dataset YAML; a bad key or value is a TransegError."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TransegError(f"{path}: cannot read the classes file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise TransegError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise TransegError(f"{path}: expected a mapping with a 'classes' list, got {type(data).__name__}")
    unknown = sorted(set(data) - set(FOLDER_KEYS), key=str)
    if unknown:
        raise TransegError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(FOLDER_KEYS)})")
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise TransegError(f"{path}: 'classes' must be a non-empty list of names, got {classes!r}")
    if len(classes) > 255:
        raise TransegError(f"{path}: 'classes' lists {len(classes)} names; at most 255 are supported")
    return {
        "classes": tuple(classes),
        "palette": _yaml_palette(path, data.get("palette"), len(classes)),
        "reduce_zero_label": _yaml_value(path, "reduce_zero_label", data.get("reduce_zero_label", False),
                                         bool),
        "ignore_index": _yaml_byte(path, "ignore_index", data.get("ignore_index", IGNORE_INDEX)),
        "bands": _yaml_bands(path, data.get("bands", 3)),
        "label_map": {
            _yaml_byte(path, "label_map", raw): _yaml_byte(path, "label_map", value)
            for raw, value in _yaml_value(path, "label_map", data.get("label_map") or {}, dict).items()
        },
    }


def _yaml_bands(path: Path, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TransegError(f"{path}: 'bands' must be a positive integer, got {value!r}")
    return value


def _yaml_value(path: Path, key: str, value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise TransegError(f"{path}: {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _yaml_byte(path: Path, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise TransegError(f"{path}: {key!r} values must be integers in 0..255, got {value!r}")
    return value


def _yaml_palette(path: Path, palette: Any, num_classes: int) -> np.ndarray | None:
    if palette is None:
        return None
    ok = isinstance(palette, list) and len(palette) == num_classes and all(
        isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
        for c in palette
    )
    if not ok:
        raise TransegError(f"{path}: 'palette' must list {num_classes} [r, g, b] colours (0..255), "
                           f"got {palette!r}")
    return np.array(palette, dtype=np.uint8)


# --------------------------------------------------------------------------- registry
DATASETS: dict[str, Callable[..., SegmentationDataset]] = {
    "ade20k": ade20k,
    "cityscapes": cityscapes,
    "coco_stuff164k": coco_stuff164k,
    "pascal_context": pascal_context,
    "pascal_context60": pascal_context60,
    "camvid": camvid,
    "folder": folder,
}


def build_dataset(
    name: str, root: str | Path, split: str, transform: Transform | None = None, **options: Any
) -> SegmentationDataset:
    """``DATASETS[name](root, split, transform=transform, **options)``, e.g. ``classes_yaml`` for
    ``folder``; an unknown name or option is a TransegError."""
    if name not in DATASETS:
        raise TransegError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    constructor = DATASETS[name]
    try:
        inspect.signature(constructor).bind(root, split, transform=transform, **options)
    except TypeError as exc:
        raise TransegError(f"dataset {name!r}: {exc}") from None
    return constructor(root, split, transform=transform, **options)
