"""Predictions back to the tools: label maps exported as COCO, Label Studio and CVAT files import back
(``transeg data import``) to the same label maps, through the library and through ``predict --format``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import transeg
from transeg.cli import cli
from transeg.data.annotations.export import EXPORT_FILES, write_export
from transeg.data.annotations.importer import import_annotations
from transeg.data.datasets import folder
from transeg.data.images import read_image, read_label, save_label_png
from transeg.inference.modes import Predictor
from transeg.inference.predict import write_probs

CLASSES = ["sky", "road", "car", "person", "pole"]
IMPORT_FORMAT = {"coco": "coco", "labelstudio": "labelstudio", "cvat": "cvat"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def by_name(out):
    """{image stem: (H, W) array of class names} of an imported folder dataset (train split)."""
    dataset = folder(out, "train")
    names = np.array([*dataset.classes] + [""] * (255 - len(dataset.classes)) + ["<ignored>"])
    return {img.stem: names[dataset.load_label(i)] for i, (img, _) in enumerate(dataset.samples)}


@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    """Three images and random label maps of 5 classes (blocks and single pixels), as ``predict`` writes."""
    root = tmp_path_factory.mktemp("pred")
    rng = np.random.default_rng(0)
    pairs = []
    for i, (h, w) in enumerate([(20, 30), (17, 9), (32, 32)]):
        image = root / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(image)
        labels = np.kron(rng.integers(0, 5, (h // 4 + 1, w // 4 + 1)), np.ones((4, 4), int))[:h, :w]
        labels[rng.random((h, w)) < 0.1] = rng.integers(0, 5)
        save_label_png(labels.astype(np.uint8), root / f"img{i}.png")
        pairs.append((image, root / f"img{i}.png"))
    return root, pairs


@pytest.mark.parametrize("fmt", ["coco", "labelstudio", "cvat"])
def test_export_then_import_gives_back_the_label_maps(predictions, tmp_path, fmt):
    root, pairs = predictions
    export = write_export(fmt, pairs, tmp_path, CLASSES, None)
    assert export.name == EXPORT_FILES[fmt]
    import_annotations(IMPORT_FORMAT[fmt], export, tmp_path / "ds", images=root, background=None, val_fraction=0)
    names = by_name(tmp_path / "ds")
    for image, label_path in pairs:
        assert np.array_equal(names[image.stem], np.array(CLASSES)[read_label(label_path)])


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(1)
    for name, size in [("a.jpg", (40, 52)), ("b.png", (33, 33))]:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / name)
    torch.manual_seed(0)
    model = transeg.create_model("segformer-b0", num_classes=3)
    for module in model.modules():  # spread the logits so that a random model predicts several classes
        if isinstance(module, torch.nn.Conv2d) and module.out_channels == 3:
            torch.nn.init.normal_(module.weight, std=2.0)
    return root, transeg.save_model(model, root.parent / "model.safetensors")


@pytest.mark.parametrize("fmt", ["coco", "labelstudio", "cvat"])
def test_predict_format_round_trips_through_data_import(model_and_images, tmp_path, fmt):
    images, model = model_and_images
    result = run("predict", model, images / "a.jpg", images / "b.png", "--out", tmp_path / "pred", "--format", fmt)
    assert result.exit_code == 0, result.output
    export = tmp_path / "pred" / EXPORT_FILES[fmt]
    back = run("data", "import", IMPORT_FORMAT[fmt], export, "--out", tmp_path / "ds", "--images", images,
               "--no-background", "--val-fraction", 0)
    assert back.exit_code == 0, back.output
    names = by_name(tmp_path / "ds")
    classes = transeg.load_model(model).config.class_names or [f"class_{i}" for i in range(3)]
    for stem in ("a", "b"):
        predicted = read_label(tmp_path / "pred" / f"{stem}.png")
        assert np.array_equal(names[stem], np.array(classes)[predicted])
    assert len(np.unique(read_label(tmp_path / "pred" / "a.png"))) > 1  # a real test: several classes


def test_probs_are_the_softmax_of_the_predictor(model_and_images, tmp_path):
    images, model = model_and_images
    result = run("predict", model, images / "a.jpg", "--out", tmp_path, "--probs", "npy")
    assert result.exit_code == 0, result.output
    logits = Predictor(transeg.load_model(model)).predict_logits(read_image(images / "a.jpg"))[0]
    expected = logits.softmax(0).numpy()
    probs = np.load(tmp_path / "a_probs.npy")
    assert probs.dtype == np.float16 and probs.shape == (3, 40, 52)
    np.testing.assert_allclose(probs, expected, atol=1e-3)
    confidence = np.asarray(Image.open(tmp_path / "a_confidence.png"))
    assert confidence.dtype == np.uint8 and confidence.shape == (40, 52)
    assert np.abs(confidence.astype(int) - np.round(expected.max(0) * 255)).max() <= 1
    assert np.array_equal(read_label(tmp_path / "a.png"), expected.argmax(0))
    only_png = run("predict", model, images / "a.jpg", "--out", tmp_path / "png", "--probs")
    assert only_png.exit_code == 0 and (tmp_path / "png" / "a_confidence.png").is_file()
    assert not (tmp_path / "png" / "a_probs.npy").exists()


def test_labelstudio_export_is_a_task_list_with_brush_predictions(predictions, tmp_path):
    _, pairs = predictions
    tasks = json.loads(write_export("labelstudio", pairs, tmp_path, CLASSES, None, model_version="m").read_text())
    result = tasks[0]["predictions"][0]["result"][0]
    assert tasks[0]["predictions"][0]["model_version"] == "m"
    assert result["type"] == "brushlabels" and result["value"]["format"] == "rle"
    assert (result["original_width"], result["original_height"]) == (30, 20)


def test_one_class_confidence_is_the_larger_of_p_and_its_complement(tmp_path):
    logits = torch.tensor([[[[-2.0, 0.0, 3.0]]]])  # (1, 1, 1, 3): a one-class model's logit
    write_probs(torch.sigmoid(logits)[0], tmp_path, "x", "npy")
    p = torch.sigmoid(logits)[0, 0, 0].numpy()
    expected = np.round(np.maximum(p, 1 - p) * 255)
    assert np.asarray(Image.open(tmp_path / "x_confidence.png"))[0].tolist() == expected.tolist()
    assert np.load(tmp_path / "x_probs.npy").shape == (1, 1, 3)


def test_cvat_export_marks_values_beyond_the_classes_void(predictions, tmp_path):
    root, pairs = predictions
    labels = read_label(pairs[0][1])
    labels[0, :5] = 255
    save_label_png(labels, tmp_path / "img0.png")
    export = write_export("cvat", [(pairs[0][0], tmp_path / "img0.png")], tmp_path, CLASSES, None)
    import_annotations("cvat", export, tmp_path / "ds", images=root, background=None, val_fraction=0)
    names = by_name(tmp_path / "ds")["img0"]
    assert (names[0, :5] == "<ignored>").all()
    assert np.array_equal(names[1:], np.array(CLASSES)[labels[1:]])
