"""Segmentation datasets: (image, label map) pairs with class names, palette and a label mapping.

Every dataset is a :class:`SegmentationDataset`; the constructors below find the pairs of the
standard layouts (ADE20K, Cityscapes, COCO-Stuff 164k, Pascal Context, CamVid) or of a generic
``images/``+``labels/`` folder described by a YAML file. Label maps are remapped at load with a
256-entry lookup table so that, afterwards, classes are ``0..num_classes-1`` and 255 is ignored.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image
from torch.utils.data import Dataset

from transeg.data.images import default_palette, read_image, read_label
from transeg.errors import TransegError

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

Transform = Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]

# --------------------------------------------------------------------------- class tables
ADE20K_PALETTE = np.array(
    [
        (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
        (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
        (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
        (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
        (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
        (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
        (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20), (255, 8, 41),
        (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
        (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255),
        (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200), (255, 82, 0),
        (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0),
        (194, 255, 0), (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255),
        (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102),
        (255, 173, 0), (255, 0, 20), (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255),
        (255, 0, 204), (0, 255, 194), (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255),
        (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0),
        (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92),
        (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0),
        (0, 224, 255), (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0),
        (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235),
        (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255),
        (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
        (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
        (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
    ],
    dtype=np.uint8,
)
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence",
    "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column",
    "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator",
    "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land",
    "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
COCO_STUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush", "banner", "blanket", "branch", "bridge",
    "building-other", "bush", "cabinet", "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile",
    "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff",
    "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog",
    "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river", "road",
    "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other",
    "stairs", "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree",
    "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)
PASCAL_CONTEXT60_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "table", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
    "bag", "bed", "bench", "book", "building", "cabinet", "ceiling", "cloth", "computer", "cup", "door",
    "fence", "floor", "flower", "food", "grass", "ground", "keyboard", "light", "mountain", "mouse",
    "curtain", "platform", "sign", "plate", "road", "rock", "shelves", "sidewalk", "sky", "snow",
    "bedclothes", "track", "tree", "truck", "wall", "water", "window", "wood",
)

PASCAL_CONTEXT_CLASSES = PASCAL_CONTEXT60_CLASSES[1:]
PASCAL_CONTEXT60_PALETTE = ADE20K_PALETTE[:60]  # mmseg reuses the first ADE20K colours

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
        (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
        (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)
# labelIds (cityscapesScripts labels.py) of the 19 evaluated classes, in trainId order.
CITYSCAPES_EVAL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

# Raw COCO-Stuff ids 0..181; these 11 thing ids are unused, the other 171 become train ids 0..170.
COCO_STUFF_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
    "Bicyclist",
)
CAMVID_PALETTE = np.array(
    [
        (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
        (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
    ],
    dtype=np.uint8,
)
CAMVID_VOID = 11


# --------------------------------------------------------------------------- label lookup tables
def identity_lut() -> np.ndarray:
    """(256,) uint8 table that leaves every value unchanged."""
    return np.arange(256, dtype=np.uint8)


def reduce_zero_label_lut() -> np.ndarray:
    """(256,) uint8 table of mmseg ``reduce_zero_label``: 0 → 255, v → v − 1, 255 → 255."""
    lut = (np.arange(256) - 1).astype(np.uint8)
    lut[0] = lut[255] = IGNORE_INDEX
    return lut


def lut_from_mapping(mapping: Mapping[int, int], base: np.ndarray | None = None) -> np.ndarray:
    """(256,) uint8 table: ``base`` (default: identity) with the ``mapping`` entries overriding it."""
    lut = identity_lut() if base is None else np.array(base, dtype=np.uint8)
    for raw, value in mapping.items():
        lut[raw] = value
    return lut


def apply_lut(lut: np.ndarray, labels: np.ndarray, outside: int = IGNORE_INDEX) -> np.ndarray:
    """(H, W) integer labels → (H, W) uint8 ``lut[labels]``; values outside 0..255 become ``outside``."""
    if labels.dtype == np.uint8:
        return lut[labels]
    inside = (labels >= 0) & (labels <= 255)
    return np.where(inside, lut[np.where(inside, labels, 0)], outside).astype(np.uint8)


_ALL_IGNORED = np.full(256, IGNORE_INDEX, dtype=np.uint8)
CITYSCAPES_LUT = lut_from_mapping({raw: i for i, raw in enumerate(CITYSCAPES_EVAL_IDS)}, _ALL_IGNORED)
COCO_STUFF_LUT = lut_from_mapping(
    {raw: i for i, raw in enumerate(r for r in range(182) if r not in COCO_STUFF_UNUSED_IDS)}, _ALL_IGNORED
)


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
        8 bits become ignore (``check_dataset`` reports them)."""
        return apply_lut(self.label_lut, raw)

    def load(self, index: int) -> dict[str, Any]:
        """Sample ``index`` read from disk with the label table applied, before any transform."""
        image_path, label_path = self.samples[index]
        image = read_image(image_path)
        sample: dict[str, Any] = {"image": image, "path": str(image_path)}
        if label_path is not None:
            raw = read_label(label_path)
            check_same_size(image_path, image.shape[:2], label_path, raw.shape)
            sample["label"] = self.map_label(raw)
            self._check_range(sample["label"], label_path)
        return sample

    def _check_range(self, label: np.ndarray, label_path: Path) -> None:
        """TransegError naming the file when a mapped label is neither a class nor ignore."""
        bad = (label >= self.num_classes) & (label != self.ignore_index)
        if bad.any():
            values = sorted({int(v) for v in np.unique(label[bad])})
            raise TransegError(
                f"{label_path}: label value(s) {values} outside the {self.num_classes} classes "
                f"[0, {self.num_classes - 1}] and not the ignore value {self.ignore_index}; "
                "run `transeg data check` on the config for hints"
            )

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load(index)
        if self.transform is None:
            return sample
        return self.transform(sample, np.random.default_rng([self.seed, self.epoch, index]))


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


def _require_dir(folder: Path, layout: str) -> Path:
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


def _nested(root: Path, name: str) -> Path:
    """``root/name`` when it exists, else ``root`` (accept either the dataset folder or its parent)."""
    return root / name if (root / name).is_dir() else root


# --------------------------------------------------------------------------- constructors
def ade20k(root: str | Path, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """ADE20K (SceneParse150): ``ADEChallengeData2016/{images,annotations}/{training,validation}``;
    0 ("other") is ignored and 1..150 become 0..149 (reduce_zero_label)."""
    base = _nested(Path(root), "ADEChallengeData2016")
    sub = _split_name(split, {"train": "training", "val": "validation"}, "ade20k")
    layout = "ADEChallengeData2016/images/{training,validation}/*.jpg and annotations/…/*.png"
    image_dir = _require_dir(base / "images" / sub, layout)
    label_dir = _require_dir(base / "annotations" / sub, layout)
    pairs = _pair_jpg_png(image_dir, label_dir)
    return SegmentationDataset(pairs, ADE20K_CLASSES, palette=ADE20K_PALETTE,
                               label_lut=reduce_zero_label_lut(), transform=transform, name=f"ade20k/{split}")


def cityscapes(root: str | Path, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """Cityscapes fine: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with
    ``gtFine/{split}/{city}/*_gtFine_labelTrainIds.png`` (make them with :func:`convert_cityscapes`)."""
    root = Path(root)
    layout = "leftImg8bit/{split}/{city}/*_leftImg8bit.png and gtFine/{split}/{city}/*_labelTrainIds.png"
    image_dir = _require_dir(root / "leftImg8bit" / split, layout)
    label_dir = _require_dir(root / "gtFine" / split, layout)
    labels = _index(label_dir, "*_gtFine_labelTrainIds.png", "_gtFine_labelTrainIds.png", recursive=True)
    if not labels and any(label_dir.rglob("*_gtFine_labelIds.png")):
        raise TransegError(f"{label_dir}: no *_gtFine_labelTrainIds.png, only *_labelIds.png: convert them "
                           "first with transeg.data.datasets.convert_cityscapes")
    images = _index(image_dir, "*_leftImg8bit.png", "_leftImg8bit.png", recursive=True)
    return SegmentationDataset(_pair(images, labels, image_dir, label_dir), CITYSCAPES_CLASSES,
                               palette=CITYSCAPES_PALETTE, transform=transform, name=f"cityscapes/{split}")


def coco_stuff164k(root: str | Path, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """COCO-Stuff 164k: ``images/{train2017,val2017}/*.jpg`` with
    ``annotations/…/*_labelTrainIds.png`` (0..170, 255 unlabelled; see :func:`convert_coco_stuff164k`)."""
    root = Path(root)
    sub = _split_name(split, {"train": "train2017", "val": "val2017"}, "coco_stuff164k")
    layout = "images/{train2017,val2017}/*.jpg and annotations/…/*_labelTrainIds.png"
    image_dir = _require_dir(root / "images" / sub, layout)
    label_dir = _require_dir(root / "annotations" / sub, layout)
    labels = _index(label_dir, "*_labelTrainIds.png", "_labelTrainIds.png")
    if not labels and any(label_dir.glob("*.png")):
        raise TransegError(f"{label_dir}: no *_labelTrainIds.png, only raw *.png: convert them first "
                           "with transeg.data.datasets.convert_coco_stuff164k")
    pairs = _pair(_index(image_dir, "*.jpg", ".jpg"), labels, image_dir, label_dir)
    return SegmentationDataset(pairs, COCO_STUFF_CLASSES, transform=transform, name=f"coco_stuff164k/{split}")


def _pascal_context_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """Pairs listed in ``VOC2010/ImageSets/SegmentationContext/{split}.txt`` (root: VOC2010 or its parent)."""
    base = _nested(Path(root), "VOC2010")
    layout = "VOC2010/{JPEGImages,SegmentationClassContext,ImageSets/SegmentationContext}"
    image_dir = _require_dir(base / "JPEGImages", layout)
    label_dir = _require_dir(base / "SegmentationClassContext", layout)
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
    image_dir = _require_dir(root / "images" / split, layout)
    label_dir = _require_dir(root / "labels" / split, layout)
    pairs = _pair_jpg_png(image_dir, label_dir)
    return SegmentationDataset(pairs, CAMVID_CLASSES, palette=CAMVID_PALETTE,
                               label_lut=lut_from_mapping({CAMVID_VOID: IGNORE_INDEX}),
                               transform=transform, name=f"camvid/{split}")


FOLDER_KEYS = ("classes", "palette", "reduce_zero_label", "ignore_index", "label_map")


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

    Binary masks stored 0/255 need ``label_map: {255: 1}``: otherwise 255 is "ignore" and the
    foreground is never learned. After mapping, the ignore value is always 255. The YAML file
    defaults to ``root/classes.yaml``.
    """
    options = _read_folder_yaml(Path(root) / "classes.yaml" if classes_yaml is None else Path(classes_yaml))
    root = Path(root)
    layout = "images/{split}/* and labels/{split}/*.png"
    image_dir = _require_dir(root / "images" / split, layout)
    label_dir = _require_dir(root / "labels" / split, layout)
    pairs = _pair(_images_by_stem(image_dir), _index(label_dir, "*.png", ".png"), image_dir, label_dir)
    lut = reduce_zero_label_lut() if options["reduce_zero_label"] else identity_lut()
    lut[options["ignore_index"]] = IGNORE_INDEX
    lut = lut_from_mapping(options["label_map"], lut)
    return SegmentationDataset(pairs, options["classes"], palette=options["palette"], label_lut=lut,
                               transform=transform, name=f"{root.name}/{split}")


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
        "label_map": {
            _yaml_byte(path, "label_map", raw): _yaml_byte(path, "label_map", value)
            for raw, value in _yaml_value(path, "label_map", data.get("label_map") or {}, dict).items()
        },
    }


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


# --------------------------------------------------------------------------- label conversions
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
    gt_dir = _nested(Path(root), "gtFine")
    sources = sorted(gt_dir.rglob("*_gtFine_labelIds.png"))
    if not sources:
        raise TransegError(f"{gt_dir}: no *_gtFine_labelIds.png found (expected gtFine/{{split}}/{{city}}/)")
    return _convert_files(sources, "_labelIds.png", "_labelTrainIds.png", convert_cityscapes_label_ids)


def convert_coco_stuff164k(root: str | Path) -> int:
    """Write ``NAME_labelTrainIds.png`` beside every raw ``NAME.png`` in
    ``root/annotations/{train2017,val2017}``; returns the number of files written."""
    label_root = _require_dir(Path(root) / "annotations", "annotations/{train2017,val2017}/*.png")
    sources = [p for sub in ("train2017", "val2017") for p in sorted((label_root / sub).glob("*.png"))
               if not p.name.endswith("_labelTrainIds.png")]
    if not sources:
        raise TransegError(f"{label_root}: no raw *.png label maps in train2017/ or val2017/")
    return _convert_files(sources, ".png", "_labelTrainIds.png", convert_coco_stuff_label_ids)


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
