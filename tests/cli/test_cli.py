"""The command line: what users run, and the one-line errors they get on bad input."""

from __future__ import annotations

import importlib
import json

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import transeg
from transeg.cli import COMMANDS, cli


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, size in [("a.jpg", (75, 101)), ("b.png", (64, 64))]:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "b0.safetensors"
    return transeg.save_model(transeg.create_model("segformer-b0", num_classes=4), path)


def test_info_json():
    result = run("info", "segformer-b0", "--num-classes", "150", "--size", "512", "512", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert set(stats["params"]) == {"encoder", "decoder", "total"}
    assert stats["params"]["total"] == stats["params"]["encoder"] + stats["params"]["decoder"]
    assert abs(stats["gmacs"] - 8.4) / 8.4 < 0.02


def test_predict_folder_writes_label_maps_and_overlays(images, checkpoint, tmp_path):
    result = run("predict", checkpoint, images, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    for stem, size in [("a", (101, 75)), ("b", (64, 64))]:
        label = Image.open(tmp_path / f"{stem}.png")
        assert label.mode == "P" and label.size == size
        assert np.asarray(label).max() < 4
        width, height = Image.open(tmp_path / f"{stem}_overlay.jpg").size  # the legend column to the right
        assert width > size[0] and height >= size[1]
    result = run("predict", checkpoint, images, "--out", tmp_path / "plain", "--no-legend")
    assert result.exit_code == 0, result.output
    for stem, size in [("a", (101, 75)), ("b", (64, 64))]:
        assert Image.open(tmp_path / "plain" / f"{stem}_overlay.jpg").size == size


def test_predict_matches_library_and_modes_agree(images, checkpoint, tmp_path):
    """Slide with one window covering the image gives the whole-image label map."""
    assert run("predict", checkpoint, images / "a.jpg", "--out", tmp_path / "w").exit_code == 0
    result = run("predict", checkpoint, images / "a.jpg", "--out", tmp_path / "s", "--mode", "slide",
                 "--crop", "128", "128", "--stride", "96", "96")
    assert result.exit_code == 0, result.output
    whole = np.asarray(Image.open(tmp_path / "w" / "a.png"))
    slide = np.asarray(Image.open(tmp_path / "s" / "a.png"))
    assert np.array_equal(whole, slide)
    from transeg.data.images import read_image
    from transeg.inference.modes import Predictor

    expected = Predictor(transeg.load_model(checkpoint)).predict(read_image(images / "a.jpg"))
    assert np.array_equal(whole, expected)


def test_convert_to_hf_and_back(checkpoint, tmp_path):
    assert run("convert", checkpoint, "--to", "hf", "--out", tmp_path / "hf").exit_code == 0
    result = run("convert", tmp_path / "hf", "--to", "transeg", "--out", tmp_path / "back.safetensors")
    assert result.exit_code == 0, result.output
    a, b = transeg.load_model(checkpoint), transeg.load_model(tmp_path / "back.safetensors")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("info", "segformer-b9"), "'segformer-b9' is neither a model name"),
        (("info", "missing.pth"), "missing.pth: no such file"),
        (("predict", "segformer-b0", "nope.jpg", "--out", "{tmp}"), "nope.jpg: no such file"),
        (("predict", "segformer-b0", "{tmp}/corrupt.jpg", "--out", "{tmp}"), "corrupt.jpg"),
        (("predict", "{tmp}/corrupt.jpg", "{tmp}/corrupt.jpg", "--out", "{tmp}"), "corrupt.jpg"),
        (("predict", "segformer-b0", "{tmp}/corrupt.jpg", "--out", "{tmp}", "--mode", "slide"), "slide"),
    ],
)
def test_bad_input_gives_one_line_error(args, expected, tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    result = run(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.fixture
def imported_modules(monkeypatch) -> list[str]:
    """The modules the command line imports by name from now on, starting with no command loaded."""
    names: list[str] = []
    real_import = importlib.import_module

    def recording_import(name: str, package: str | None = None):
        names.append(name)
        return real_import(name, package)

    monkeypatch.setattr(cli, "commands", {})
    monkeypatch.setattr(importlib, "import_module", recording_import)
    return names


def test_help_lists_every_command_without_importing_one(imported_modules):
    result = run("--help")
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.split("Commands:\n")[1].splitlines()]
    assert listed == sorted(COMMANDS)
    assert "  erf         Effective receptive fields (SegFormer Fig.\n" in result.output
    assert imported_modules == []


def test_a_command_imports_its_group_alone(imported_modules):
    result = run("list")
    assert result.exit_code == 0 and "segformer-b0\n" in result.output
    assert imported_modules == ["transeg.cli.models"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_listed_summary_is_the_first_paragraph_of_the_commands_help(name):
    command = cli.get_command(click.Context(cli), name)
    assert COMMANDS[name].summary == " ".join(command.help.partition("\n\n")[0].split())
