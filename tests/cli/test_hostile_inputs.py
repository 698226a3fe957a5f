"""Hostile input through the command line: each case ends with exit code 2 and one line naming the
file, key or value at fault, and no traceback; valid but unusual images decode correctly."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import transeg
from transeg.cli import cli
from transeg.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(d / "ok.png")
    Image.fromarray(image).save(d / "ok.jpg")
    (d / "empty.png").write_bytes(b"")
    (d / "truncated.png").write_bytes((d / "ok.png").read_bytes()[:200])
    (d / "truncated.jpg").write_bytes((d / "ok.jpg").read_bytes()[:300])
    (d / "garbage.jpg").write_bytes(b"this is not an image at all")
    (d / "no_images").mkdir()
    Image.new("RGB", (4200, 4100)).save(d / "huge.png")
    model = transeg.create_model("segformer-b0", num_classes=3)
    transeg.save_model(model, d / "model.safetensors")
    (d / "truncated.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000])
    (d / "empty.pth").write_bytes(b"")
    (d / "random.pth").write_bytes(bytes(rng.integers(0, 255, 500, dtype=np.uint8)))
    (d / "evil.pth").write_bytes(pickle.dumps(_Payload(str(d / "pwned"))))
    torch.save({"something": torch.ones(3)}, d / "foreign.pth")
    (d / "bert").mkdir()
    (d / "bert" / "config.json").write_text('{"model_type": "bert"}')
    torch.save({}, d / "bert" / "pytorch_model.bin")
    return d


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A folder dataset whose train split holds one bad file per problem (a config per problem)."""
    root = write_synthetic_dataset(tmp_path_factory.mktemp("data") / "d", num_train=2, num_val=1, size=(64, 64))
    return root


def run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, *fragments: str) -> None:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2, output
    assert len(errors) == 1, output
    for fragment in fragments:
        assert fragment in errors[0], output
    assert "Traceback" not in output


PREDICT_CASES = [
    ("missing image", ["{d}/nope.png"], "model", ["nope.png: no such file"]),
    ("empty image", ["{d}/empty.png"], "model", ["empty.png", "empty"]),
    ("truncated png", ["{d}/truncated.png"], "model", ["truncated.png"]),
    ("truncated jpeg", ["{d}/truncated.jpg"], "model", ["truncated.jpg"]),
    ("garbage jpeg", ["{d}/garbage.jpg"], "model", ["garbage.jpg"]),
    ("folder without images", ["{d}/no_images"], "model", ["no_images: the folder holds no images"]),
    ("glob matching nothing", ["{d}/*.tiff"], "model", ["*.tiff: the pattern matches no file"]),
    ("image too large for whole mode", ["{d}/huge.png"], "model", ["too large for whole-image", "--mode slide"]),
    ("unknown model name", ["{d}/ok.png"], "segformer-b7", ["'segformer-b7' is neither a model name"]),
    ("missing checkpoint", ["{d}/ok.png"], "{d}/missing.safetensors", ["missing.safetensors: no such file"]),
    ("truncated checkpoint", ["{d}/ok.png"], "{d}/truncated.safetensors", ["truncated.safetensors"]),
    ("empty checkpoint", ["{d}/ok.png"], "{d}/empty.pth", ["empty.pth: the file is empty"]),
    ("random bytes checkpoint", ["{d}/ok.png"], "{d}/random.pth", ["random.pth: cannot read checkpoint safely"]),
    ("pickle payload", ["{d}/ok.png"], "{d}/evil.pth", ["evil.pth: cannot read checkpoint safely"]),
    ("foreign state dict", ["{d}/ok.png"], "{d}/foreign.pth", ["foreign.pth: unrecognised checkpoint format"]),
    ("not a segformer directory", ["{d}/ok.png"], "{d}/bert", ["model_type 'bert' is not a SegFormer"]),
]


@pytest.mark.parametrize(("name", "images", "model", "fragments"), PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES])
def test_predict_rejects(files, tmp_path, name, images, model, fragments):
    model = model.replace("{d}", str(files)) if model != "model" else files / "model.safetensors"
    code, output = run("predict", model, *(i.replace("{d}", str(files)) for i in images), "--out", tmp_path)
    assert_one_line_error(code, output, *fragments)
    assert not (files / "pwned").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--mode", "slide", "--crop", "32", "32", "--stride", "64", "64"], ["stride"]),
        (["--scales", "1,big"], ["--scales", "'1,big'"]),
        (["--num-classes", "5"], ["has 3 classes, not 5"]),
    ],
)
def test_predict_rejects_bad_options(files, tmp_path, args, fragments):
    code, output = run("predict", files / "model.safetensors", files / "ok.png", "--out", tmp_path, *args)
    assert_one_line_error(code, output, *fragments)


def _unusual_images(directory: Path) -> dict[str, tuple[int, int]]:
    """Valid images in unusual modes -> the (width, height) their label map must have."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("RGBA").save(directory / "rgba.png")
    Image.fromarray(rgb).convert("P").save(directory / "palette.png")
    Image.fromarray(rgb[..., 0]).save(directory / "grey.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(directory / "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: displayed as 40 wide, 56 high
    Image.fromarray(rgb).save(directory / "rotated.jpg", exif=exif)
    return {"rgba": (56, 40), "palette": (56, 40), "grey": (56, 40), "sixteen": (56, 40), "rotated": (40, 56)}


def test_unusual_but_valid_images_decode(files, tmp_path):
    expected = _unusual_images(tmp_path)
    code, output = run("predict", files / "model.safetensors", *(tmp_path / n for n in sorted(tmp_path.iterdir())),
                       "--out", tmp_path / "out")
    assert code == 0, output
    for stem, size in expected.items():
        assert Image.open(tmp_path / "out" / f"{stem}.png").size == size, stem


# --------------------------------------------------------------------------- configs and datasets
def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def _data(root: Path) -> str:
    return f"data: {{dataset: folder, root: {root}, crop_size: [64, 64], scale: [64, 64], test_scale: null, " \
           "num_workers: 0, val_split: null}\n"


CONFIG_CASES = [
    ("yaml syntax", "data: {dataset: [camvid\n", ["c.yaml: line", "invalid YAML"]),
    ("unknown key", "{data}train: {batchsize: 2}\n", ["train.batchsize: unknown key"]),
    ("wrong type", "{data}train: {batch_size: two}\n", ["train.batch_size", "'two'"]),
    ("negative lr", "{data}optimizer: {lr: -0.1}\n", ["optimizer.lr", "greater than 0", "-0.1"]),
    ("crop too small", "data: {dataset: folder, root: x, crop_size: [8, 8]}\n", ["crop_size (8, 8) is below 32"]),
    ("warm-up too long", "{data}schedule: {iterations: 10, warmup_iters: 10}\n", ["warmup_iters must be below"]),
    ("unknown dataset", "data: {dataset: voc, root: x}\n", ["unknown dataset 'voc'"]),
    ("unknown option", "{data_opt}", ["dataset 'folder'", "colour"]),
]


@pytest.mark.parametrize(("name", "text", "fragments"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_train_rejects_config(dataset, tmp_path, name, text, fragments):
    text = text.replace("{data}", _data(dataset)).replace(
        "{data_opt}", f"data: {{dataset: folder, root: {dataset}, options: {{colour: red}}}}\n")
    code, output = run("train", _config(tmp_path, text), "--set", f"output_dir={tmp_path / 'run'}")
    assert_one_line_error(code, output, *fragments)


def _broken_copy(dataset: Path, tmp_path: Path, break_it) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(dataset, root)
    break_it(root)
    return root


DATA_CASES = [
    ("missing folder", lambda r: shutil.rmtree(r / "images"), ["images/train", "images/{split}"]),
    ("empty split", lambda r: [p.unlink() for p in (r / "images" / "train").iterdir()], ["images/train"]),
    ("unmatched pair", lambda r: (r / "labels" / "train" / "0001.png").rename(r / "labels" / "train" / "x.png"),
     ["0001", "x"]),
    ("size mismatch", lambda r: Image.new("L", (30, 20)).save(r / "labels" / "train" / "0000.png"),
     ["0000.png is 64x64 but its label map", "30x20"]),
    ("label out of range", lambda r: Image.new("L", (64, 64), 9).save(r / "labels" / "train" / "0000.png"),
     ["0000.png: label value(s) [9] outside the 6 classes"]),
    ("RGB label map", lambda r: Image.new("RGB", (64, 64), (9, 9, 9)).save(r / "labels" / "train" / "0000.png"),
     ["0000.png", "class indices"]),
    ("bad classes yaml", lambda r: (r / "classes.yaml").write_text("classes: [a, b\n"), ["classes.yaml"]),
]


@pytest.mark.parametrize(("name", "break_it", "fragments"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_train_rejects_dataset(dataset, tmp_path, name, break_it, fragments):
    root = _broken_copy(dataset, tmp_path, break_it)
    config = _config(tmp_path, _data(root) + "schedule: {iterations: 2, warmup_iters: 0}\ntrain: {batch_size: 2}\n")
    code, output = run("train", config, "--set", f"output_dir={tmp_path / 'run'}")
    assert_one_line_error(code, output, *fragments)


def test_missing_config_file(tmp_path):
    code, output = run("train", tmp_path / "absent.yaml")
    assert_one_line_error(code, output, "absent.yaml: no such config file")
