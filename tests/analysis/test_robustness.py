"""The robustness benchmark: seeded corruptions, the cache, the outputs and the command's errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("imagecorruptions")

import transeg
from transeg.analysis import corruptions, robustness
from transeg.analysis.robustness import CORRUPTIONS, corrupt_image, select_indices
from transeg.cli import cli
from transeg.data.synthetic import write_synthetic_dataset
from transeg.errors import TransegError


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes"), num_train=1, num_val=3, size=(64, 64))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "b0.safetensors"
    return transeg.save_model(transeg.create_model("segformer-b0", num_classes=6), path)


@pytest.fixture(scope="module")
def image(data):
    return np.asarray(Image.open(data / "images" / "val" / "0000.png").convert("RGB"))


def base_args(checkpoint, data, out, *extra):
    return ("robustness", checkpoint, "--dataset", "folder", "--data-root", data, "--split", "val",
            "--corruptions", "gaussian_noise,motion_blur", "--severities", "1,3", "--limit", "2",
            "--out", out, *extra)


def test_table5_order():
    assert CORRUPTIONS[:4] == ("motion_blur", "defocus_blur", "glass_blur", "gaussian_blur")
    assert CORRUPTIONS[-4:] == ("snow", "spatter", "fog", "frost") and len(CORRUPTIONS) == 16


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "glass_blur", "frost"])
def test_corruption_is_seeded(image, name):
    state = np.random.get_state()
    a = corrupt_image(image, name, 2, seed=0, index=1)
    b = corrupt_image(image, name, 2, seed=0, index=1)
    assert a.dtype == np.uint8 and a.shape == image.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, corrupt_image(image, name, 2, seed=1, index=1))
    assert not np.array_equal(a, corrupt_image(image, name, 2, seed=0, index=2))
    restored = np.random.get_state()
    assert all(np.array_equal(x, y) for x, y in zip(state[1:3], restored[1:3], strict=True))


def test_brightness_5_changes_the_image(image):
    out = corrupt_image(image, "brightness", 5)
    assert out.shape == image.shape
    assert out.astype(float).mean() > image.astype(float).mean() + 20


def test_to_uint8_clips_rounds_and_resizes():
    out = corruptions.to_uint8(np.array([[[-3.0, 254.6, 300.0]]]).repeat(40, 0).repeat(40, 1), (32, 48, 3))
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3)
    assert out[0, 0].tolist() == [0, 255, 255]


def test_select_indices_spreads_evenly():
    assert select_indices(101, 5) == [0, 25, 50, 75, 100]
    assert select_indices(3, 10) == [0, 1, 2]
    assert select_indices(7, 1) == [0]


def test_cli_end_to_end_and_cache(checkpoint, data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    result = run(*base_args(checkpoint, data, tmp_path / "a", "--cache", cache))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "a" / "robustness.json").read_text())
    assert set(report["corruptions"]) == {"gaussian_noise", "motion_blur"}
    assert 0 <= report["clean"] <= 100
    for by_sev in report["corruptions"].values():
        assert set(by_sev) == {"1", "3"} and all(0 <= v <= 100 for v in by_sev.values())
    assert report["num_images"] == 2 and report["seed"] == 0
    with open(tmp_path / "a" / "robustness.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["model", "clean", "motion_blur", "gaussian_noise"]  # Table 5: blur before noise
    assert rows[1][0] == "segformer-b0" and len(rows) == 2
    with open(tmp_path / "a" / "robustness_by_severity.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 1 + 1 + 4
    assert Image.open(tmp_path / "a" / "robustness.png").format == "PNG"
    files = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*.png"))
    assert files == [f"{c}/{s}/{stem}.png" for c in ("gaussian_noise", "motion_blur") for s in (1, 3)
                     for stem in ("0000", "0002")]

    def no_generation(*args, **kwargs):
        raise AssertionError("the cached images should have been read")

    monkeypatch.setattr(robustness, "corrupt_image", no_generation)
    result = run(*base_args(checkpoint, data, tmp_path / "b", "--cache", cache))
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "b" / "robustness.json").read_text())
    assert again["corruptions"] == report["corruptions"] and again["clean"] == report["clean"]
    assert sum(again["generated_images"].values()) == 0

    result = run(*base_args(checkpoint, data, tmp_path / "c", "--cache", cache, "--seed", "1"))
    assert result.exit_code == 2 and "seed 0" in result.output


@pytest.mark.parametrize(("extra", "message"), [
    (("--severities", "0"), "severity must be an integer in 1..5"),
    (("--corruptions", "rain"), "unknown corruption 'rain' (valid: motion_blur,"),
    (("--limit", "0"), "Invalid value for '--limit': 0 is not in the range x>=1"),
    (("--mode", "slide"), "needs --crop and --stride"),
])
def test_bad_input_is_one_line(checkpoint, data, tmp_path, extra, message):
    result = run(*base_args(checkpoint, data, tmp_path, *extra))
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_class_count_mismatch(data, tmp_path):
    other = transeg.save_model(transeg.create_model("segformer-b0", num_classes=3), tmp_path / "m.safetensors")
    result = run(*base_args(other, data, tmp_path / "out"))
    assert result.exit_code == 2 and "3 classes, not 6" in result.output


def test_missing_library_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "imagecorruptions":
            raise ImportError("No module named 'imagecorruptions'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(TransegError, match=r"pip install 'transeg\[analysis\]'"):
        corruptions.load_corrupt()
