"""Datasets: layouts, pairing, label tables, converters, errors, and the dataset check."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transeg.data import datasets as D
from transeg.data import labels as L
from transeg.data import prepare as C
from transeg.data.check import check_dataset, diagnose
from transeg.data.transforms import train_transforms
from transeg.errors import TransegError

CAMVID = Path(__file__).resolve().parents[3] / "shared" / "data" / "camvid"


def write_image(path: Path, h: int = 6, w: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def write_label(path: Path, values, h: int = 6, w: int = 8) -> None:
    """An (h, w) 8-bit label PNG cycling through ``values``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.resize(np.asarray(values, np.uint8), (h, w))).save(path)


def make_pairs(image_dir: Path, label_dir: Path, names, values, image_ext=".jpg", label_suffix=".png"):
    for name in names:
        write_image(image_dir / f"{name}{image_ext}")
        write_label(label_dir / f"{name}{label_suffix}", values)


def labels_of(dataset: D.SegmentationDataset) -> set[int]:
    return {int(v) for i in range(len(dataset)) for v in np.unique(dataset[i]["label"])}


# --------------------------------------------------------------------------- layouts and label tables
def test_ade20k_reduces_zero_label_and_accepts_split_aliases(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    make_pairs(base / "images/training", base / "annotations/training", ["a", "b"], [0, 1, 150])
    for root, split in ((tmp_path, "train"), (base, "training")):
        ds = D.ade20k(root, split)
        assert len(ds) == 2 and ds.num_classes == 150 and ds.palette.shape == (150, 3)
        assert labels_of(ds) == {255, 0, 149}
    sample = ds[0]
    assert sample["image"].shape == (6, 8, 3) and sample["path"].endswith("a.jpg")
    with pytest.raises(TransegError, match="unknown split 'test'"):
        D.ade20k(tmp_path, "test")


def test_reduce_zero_label_lut_is_mmseg():
    lut = L.reduce_zero_label_lut()
    assert (lut[0], lut[1], lut[150], lut[254], lut[255]) == (255, 0, 149, 253, 255)


def test_cityscapes_conversion_and_dataset(tmp_path):
    for city, name in (("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")):
        write_image(tmp_path / f"leftImg8bit/train/{city}/{name}_leftImg8bit.png")
        write_label(tmp_path / f"gtFine/train/{city}/{name}_gtFine_labelIds.png", [0, 7, 26, 33, 4])
    with pytest.raises(TransegError, match="convert_cityscapes"):
        D.cityscapes(tmp_path, "train")
    assert C.convert_cityscapes(tmp_path) == 2
    ds = D.cityscapes(tmp_path, "train")
    assert len(ds) == 2 and ds.classes[13] == "car" and tuple(ds.palette[0]) == (128, 64, 128)
    assert labels_of(ds) == {255, 0, 13, 18}


def test_convert_cityscapes_label_ids_maps_the_19_classes():
    ids = np.array([[-1, 0, 7, 8, 11], [24, 26, 31, 33, 34]], dtype=np.int64)
    expected = [[255, 255, 0, 1, 2], [11, 13, 16, 18, 255]]
    assert C.convert_cityscapes_label_ids(ids).tolist() == expected
    assert (L.CITYSCAPES_LUT != 255).sum() == 19


def test_convert_coco_stuff_label_ids_matches_mmseg_table():
    raw = np.array([0, 10, 11, 12, 24, 26, 27, 30, 45, 66, 69, 71, 83, 91, 181, 182, 255], dtype=np.uint8)
    expected = [0, 10, 255, 11, 23, 24, 25, 26, 40, 60, 61, 62, 73, 80, 170, 255, 255]
    assert C.convert_coco_stuff_label_ids(raw).tolist() == expected
    assert sorted(set(L.COCO_STUFF_LUT.tolist()) - {255}) == list(range(171))


def test_coco_stuff164k_conversion_and_dataset(tmp_path):
    for split in ("train2017", "val2017"):
        make_pairs(tmp_path / "images" / split, tmp_path / "annotations" / split, ["000000000139"], [0, 12, 181])
    with pytest.raises(TransegError, match="convert_coco_stuff164k"):
        D.coco_stuff164k(tmp_path, "val")
    assert C.convert_coco_stuff164k(tmp_path) == 2
    ds = D.coco_stuff164k(tmp_path, "val")
    assert len(ds) == 1 and ds.num_classes == 171 and labels_of(ds) == {0, 11, 170}


def make_pascal_context(root: Path, names=("2008_000002", "2008_000003")) -> Path:
    base = root / "VOC2010"
    make_pairs(base / "JPEGImages", base / "SegmentationClassContext", names, [0, 1, 59])
    (base / "ImageSets/SegmentationContext").mkdir(parents=True)
    (base / "ImageSets/SegmentationContext/train.txt").write_text("\n".join(names) + "\n")
    return base


def test_pascal_context_59_reduces_zero_and_60_does_not(tmp_path):
    base = make_pascal_context(tmp_path)
    ds59, ds60 = D.pascal_context(tmp_path, "train"), D.pascal_context60(base, "train")
    assert (ds59.num_classes, ds60.num_classes) == (59, 60) and ds60.classes[0] == "background"
    assert labels_of(ds59) == {255, 0, 58} and labels_of(ds60) == {0, 1, 59}


def test_pascal_context_listed_name_without_file(tmp_path):
    base = make_pascal_context(tmp_path)
    (base / "SegmentationClassContext/2008_000003.png").unlink()
    with pytest.raises(TransegError, match=r"train\.txt: 1 listed names have no label map.*2008_000003"):
        D.pascal_context(tmp_path, "train")
    with pytest.raises(TransegError, match="val.txt: split list not found"):
        D.pascal_context(tmp_path, "val")


def test_camvid_maps_void_to_ignore(tmp_path):
    make_pairs(tmp_path / "images/train", tmp_path / "labels/train", ["0001TP_006690"], [0, 10, 11])
    ds = D.camvid(tmp_path, "train")
    assert ds.classes[0] == "Sky" and tuple(ds.palette[4]) == (60, 40, 222)
    assert labels_of(ds) == {0, 10, 255}


# --------------------------------------------------------------------------- generic folder
def make_folder(root: Path, values, yaml_text: str, names=("x", "y")) -> Path:
    make_pairs(root / "images/train", root / "labels/train", names, values, image_ext=".png")
    classes = root / "classes.yaml"
    classes.write_text(yaml_text)
    return classes


def test_folder_binary_0_255_with_label_map(tmp_path):
    yaml_file = make_folder(tmp_path, [0, 255], "classes: [background, foreground]\nlabel_map: {255: 1}\n")
    ds = D.folder(tmp_path, "train", yaml_file)
    assert ds.num_classes == 2 and labels_of(ds) == {0, 1}
    report = check_dataset(ds)
    assert report.ok and report.raw_values.keys() == {0, 255} and diagnose(report) == []


def test_folder_options_reduce_zero_ignore_index_and_palette(tmp_path):
    text = "classes: [a, b]\npalette: [[1, 2, 3], [4, 5, 6]]\nreduce_zero_label: true\nignore_index: 9\n"
    ds = D.folder(tmp_path, "train", make_folder(tmp_path, [0, 1, 2, 9], text))
    assert labels_of(ds) == {255, 0, 1} and ds.palette.tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("classes: [a]\ncolours: []\n", "unknown key 'colours'"),
        ("names: [a]\n", "unknown key 'names'"),
        ("classes: []\n", "'classes' must be a non-empty list"),
        ("classes: [a, b]\npalette: [[0, 0, 0]]\n", "'palette' must list 2"),
        ("classes: [a]\nlabel_map: {300: 1}\n", "'label_map' values must be integers in 0..255"),
        ("classes: [a]\nreduce_zero_label: 'yes'\n", "'reduce_zero_label' must be a bool"),
        ("classes: [a\n", "not valid YAML"),
    ],
)
def test_folder_yaml_errors_name_the_key(tmp_path, text, match):
    yaml_file = make_folder(tmp_path, [0], text)
    with pytest.raises(TransegError, match=match) as info:
        D.folder(tmp_path, "train", yaml_file)
    assert str(yaml_file) in str(info.value)


def test_build_dataset_by_name_and_option_errors(tmp_path):
    yaml_file = make_folder(tmp_path, [0, 1], "classes: [a, b]\n")
    assert len(D.build_dataset("folder", tmp_path, "train", classes_yaml=yaml_file)) == 2
    assert set(D.DATASETS) >= {"ade20k", "cityscapes", "coco_stuff164k", "pascal_context", "camvid", "folder"}
    with pytest.raises(TransegError, match="unknown dataset 'voc'"):
        D.build_dataset("voc", tmp_path, "train")
    with pytest.raises(TransegError, match="classes.yaml"):  # the default YAML beside the data is absent
        D.build_dataset("folder", tmp_path / "elsewhere", "train")
    with pytest.raises(TransegError, match="dataset 'camvid'.*classes_yaml"):
        D.build_dataset("camvid", tmp_path, "train", classes_yaml=yaml_file)


# --------------------------------------------------------------------------- errors
def test_missing_and_empty_folders_are_named(tmp_path):
    with pytest.raises(TransegError, match=r"images/train: folder not found \(expected images"):
        D.camvid(tmp_path, "train")
    (tmp_path / "images/train").mkdir(parents=True)
    (tmp_path / "labels/train").mkdir(parents=True)
    with pytest.raises(TransegError, match="images/train: no images found"):
        D.camvid(tmp_path, "train")


def test_unmatched_pairs_list_names(tmp_path):
    make_pairs(tmp_path / "images/val", tmp_path / "labels/val", ["a", "b"], [0])
    write_image(tmp_path / "images/val/only_image.jpg")
    write_label(tmp_path / "labels/val/only_label.png", [0])
    with pytest.raises(TransegError, match="1 images without a label \\(only_image\\); 1 labels without an image"):
        D.camvid(tmp_path, "val")


def test_size_mismatch_names_both_files(tmp_path):
    write_image(tmp_path / "images/train/a.jpg", 6, 8)
    write_label(tmp_path / "labels/train/a.png", [0], 3, 4)
    ds = D.camvid(tmp_path, "train")
    with pytest.raises(TransegError, match=r"a\.jpg is 8x6 but its label map .*a\.png is 4x3"):
        ds[0]
    report = check_dataset(ds)
    assert len(report.size_mismatches) == 1 and not report.ok
    assert any("size mismatch" in hint for hint in diagnose(report))


# --------------------------------------------------------------------------- transforms and seeding
def test_transform_is_seeded_per_sample_and_epoch(tmp_path):
    make_pairs(tmp_path / "images/train", tmp_path / "labels/train", ["a"], [0, 1, 2], image_ext=".jpg")
    ds = D.camvid(tmp_path, "train", transform=train_transforms(4, (16, 8), (0.5, 2.0), (0, 0, 0), (1, 1, 1)))
    first, again = ds[0], ds[0]
    assert first["image"].shape == (3, 4, 4) and first["label"].dtype == torch.int64
    assert torch.equal(first["image"], again["image"])
    ds.set_epoch(1)
    assert not torch.equal(first["image"], ds[0]["image"])


# --------------------------------------------------------------------------- check and diagnose
def test_binary_0_255_without_label_map_gets_the_hint(tmp_path):
    ds = D.folder(tmp_path, "train", make_folder(tmp_path, [0, 255], "classes: [background, foreground]\n"))
    report = check_dataset(ds)
    assert report.ignored_raw_values == [255] and report.class_pixels[1] == 0
    hints = diagnose(report)
    assert any("label_map: {255: 1}" in h for h in hints)
    assert any("foreground" in h and "NaN" in h for h in hints)  # the unseen class is named


def test_one_based_labels_get_the_reduce_zero_label_hint(tmp_path):
    ds = D.folder(tmp_path, "train", make_folder(tmp_path, [1, 2, 3], "classes: [a, b, c]\n"))
    report = check_dataset(ds)
    assert list(report.out_of_range.values()) == [[3], [3]] and not report.ok
    hints = diagnose(report)
    assert any("reach 3" in h and "reduce_zero_label" in h for h in hints)


def test_reduce_zero_label_on_zero_based_labels_gets_the_hint(tmp_path):
    text = "classes: [background, object]\nreduce_zero_label: true\n"
    ds = D.folder(tmp_path, "train", make_folder(tmp_path, [0, 0, 0, 1], text))
    hints = diagnose(check_dataset(ds))
    assert any("turn reduce_zero_label off" in h for h in hints)


def test_only_ignore_and_noisy_labels(tmp_path):
    ds = D.folder(tmp_path / "a", "train", make_folder(tmp_path / "a", [255], "classes: [a, b]\n"))
    assert any("every labelled pixel maps to ignore" in h for h in diagnose(check_dataset(ds)))
    ds = D.folder(tmp_path / "b", "train", make_folder(tmp_path / "b", list(range(0, 40, 3)), "classes: [a, b]\n"))
    assert any("lossy (JPEG)" in h for h in diagnose(check_dataset(ds)))


def test_check_records_unreadable_and_colour_labels(tmp_path):
    yaml_file = make_folder(tmp_path, [0, 1], "classes: [a, b]\n", names=("good", "rgb", "broken"))
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "labels/train/rgb.png")
    (tmp_path / "labels/train/broken.png").write_bytes(b"\x89PNG not really")
    report = check_dataset(D.folder(tmp_path, "train", yaml_file))
    assert report.checked == 3 and len(report.unreadable) == 2 and report.class_pixels == [24, 24]
    hints = diagnose(report)
    assert any("colour images" in h for h in hints)
    assert json.loads(json.dumps(report.to_dict()))["num_classes"] == 2
    assert check_dataset(D.folder(tmp_path, "train", yaml_file), limit=1).checked == 1


# --------------------------------------------------------------------------- real data
@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid not found at {CAMVID} (shared data folder absent)")
def test_real_camvid_splits_and_labels():
    train, val = D.camvid(CAMVID, "train"), D.camvid(CAMVID, "val")
    assert (len(train), len(val)) == (367, 101)
    sample = val[0]
    assert sample["image"].shape == (360, 480, 3) and sample["label"].shape == (360, 480)
    assert set(np.unique(sample["label"]).tolist()) <= set(range(11)) | {255}
    assert check_dataset(val, limit=5).ok
