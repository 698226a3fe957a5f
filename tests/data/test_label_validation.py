"""Label maps are checked where they are read, as `transeg data check` checks them (any bit depth, any mode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transeg.data.check import check_dataset
from transeg.data.datasets import folder
from transeg.data.images import read_label
from transeg.data.labelled import require_labelled_pixels
from transeg.errors import TransegError

SIZE = (6, 8)


def write_label(path: Path, values: np.ndarray, mode: str) -> None:
    """(H, W) values as an 8-bit greyscale ("L"), 16-bit greyscale ("I;16") or palette ("P") PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(values.astype(np.uint16)).save(path)
    elif mode == "P":
        img = Image.frombytes("P", (values.shape[1], values.shape[0]), values.astype(np.uint8).tobytes())
        img.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
        img.save(path)
    else:
        Image.fromarray(values.astype(np.uint8), mode="L").save(path)


def write_folder(root: Path, labels: dict[str, tuple[np.ndarray, str]], split: str = "train") -> Path:
    """A ``folder`` dataset of three classes: one random image per label map."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text("classes: [a, b, c]\n")
    rng = np.random.default_rng(0)
    for stem, (values, mode) in labels.items():
        image_path = root / "images" / split / f"{stem}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(image_path)
        write_label(root / "labels" / split / f"{stem}.png", values, mode)
    return root


def _map(value: int) -> np.ndarray:
    values = np.zeros(SIZE, dtype=np.int64)
    values[2:4, 3:6] = value
    return values


@pytest.mark.parametrize("mode,value", [("L", 7), ("I;16", 300), ("I;16", 65535), ("P", 5)])
def test_out_of_range_values_stop_with_the_file_named(tmp_path, mode, value):
    dataset = folder(write_folder(tmp_path, {"bad": (_map(value), mode)}), "train")
    label_path = tmp_path / "labels" / "train" / "bad.png"
    assert int(read_label(label_path).max()) == value  # the file holds what the test meant
    with pytest.raises(TransegError, match=rf"bad\.png: label value\(s\) \[{value}\] outside the 3 classes"):
        dataset.load(0)
    with pytest.raises(TransegError, match=r"bad\.png"):
        dataset.load_label(0)
    assert check_dataset(dataset).out_of_range == {str(label_path): [value]}  # the same verdict


@pytest.mark.parametrize("mode", ["L", "I;16", "P"])
def test_valid_maps_of_every_mode_load(tmp_path, mode):
    values = _map(2)
    values[0, 0] = 255  # ignore
    dataset = folder(write_folder(tmp_path, {"ok": (values, mode)}), "train")
    label = dataset.load(0)["label"]
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, values)
    assert check_dataset(dataset).ok


def test_load_and_check_agree_on_every_file(tmp_path):
    maps = {"l_ok": (_map(1), "L"), "l_bad": (_map(3), "L"), "w_ok": (_map(2), "I;16"),
            "w_bad": (_map(256), "I;16"), "p_ok": (_map(0), "P"), "p_bad": (_map(254), "P")}
    dataset = folder(write_folder(tmp_path, maps), "train")
    flagged = set(check_dataset(dataset).out_of_range)
    for index, (_, label_path) in enumerate(dataset.samples):
        try:
            dataset.load(index)
            raised = False
        except TransegError:
            raised = True
        assert raised == (str(label_path) in flagged) == label_path.stem.endswith("_bad"), label_path.name


def test_a_dataset_labelling_nothing_is_refused(tmp_path):
    ignored = np.full(SIZE, 255)
    dataset = folder(write_folder(tmp_path, {"x": (ignored, "L"), "y": (ignored, "I;16"), "z": (ignored, "P")}),
                     "train")
    with pytest.raises(TransegError, match=r"no pixel of its 3 label maps is labelled.*ignore value 255"):
        require_labelled_pixels(dataset)


def test_one_labelled_map_is_enough_and_bad_maps_follow_on_bad_sample(tmp_path):
    maps = {"a_bad": (_map(300), "I;16"), "b_ignored": (np.full(SIZE, 255), "L"), "c_ok": (_map(1), "P")}
    dataset = folder(write_folder(tmp_path, maps), "train")
    with pytest.raises(TransegError, match=r"a_bad\.png"):
        require_labelled_pixels(dataset, "error")
    require_labelled_pixels(dataset, "skip")  # passes over a_bad, finds c_ok


def test_reduce_zero_label_that_ignores_everything_is_refused(tmp_path):
    root = write_folder(tmp_path, {"zeros": (np.zeros(SIZE), "L")})
    (root / "classes.yaml").write_text("classes: [a, b, c]\nreduce_zero_label: true\n")
    with pytest.raises(TransegError, match="no pixel"):
        require_labelled_pixels(folder(root, "train"))
