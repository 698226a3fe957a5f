"""The procedural demo dataset: scenes, their determinism, the written folder layout and regeneration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from transeg.data.synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_PALETTE,
    generate_scene,
    write_synthetic_dataset,
)
from transeg.errors import TransegError

K = len(SYNTHETIC_CLASSES)


def _scenes(seed: int, count: int, size: tuple[int, int] = (128, 128)) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [generate_scene(rng, size) for _ in range(count)]


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- scenes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(128, 128), (96, 160)])
def test_scene_shapes_dtypes_and_label_range(size):
    for image, labels in _scenes(0, 5, size):
        assert image.shape == (*size, 3) and image.dtype == np.uint8
        assert labels.shape == size and labels.dtype == np.uint8
        assert labels.max() < K


def test_scene_is_deterministic_for_a_seed():
    a, b, c = _scenes(7, 3), _scenes(7, 3), _scenes(8, 3)
    for (ia, la), (ib, lb) in zip(a, b, strict=True):
        assert ia.tobytes() == ib.tobytes() and la.tobytes() == lb.tobytes()
    assert all(ia.tobytes() != ic.tobytes() for (ia, _), (ic, _) in zip(a, c, strict=True))


def test_every_class_appears_in_most_scenes():
    present = np.array([np.bincount(labels.ravel(), minlength=K) > 0 for _, labels in _scenes(0, 20)])
    assert present.mean(axis=0).min() >= 0.8
    share = np.bincount(np.concatenate([labels.ravel() for _, labels in _scenes(0, 20)]), minlength=K)
    assert (share / share.sum())[1:].min() > 0.03  # every object class covers a useful pixel share


def test_colour_alone_does_not_separate_the_classes():
    """Nearest class-mean colour, fitted on train scenes, is far from the accuracy demo training reaches."""
    train, val = _scenes(0, 20), _scenes(1, 10)
    x = np.concatenate([image.reshape(-1, 3) for image, _ in train]).astype(np.float32)
    y = np.concatenate([labels.ravel() for _, labels in train])
    means = np.stack([x[y == k].mean(axis=0) for k in range(K)])
    xv = np.concatenate([image.reshape(-1, 3) for image, _ in val]).astype(np.float32)
    yv = np.concatenate([labels.ravel() for _, labels in val])
    pred = ((xv[:, None, :] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)
    iou = [((pred == k) & (yv == k)).sum() / max(((pred == k) | (yv == k)).sum(), 1) for k in range(K)]
    assert (pred == yv).mean() < 0.5
    assert np.mean(iou) < 0.25


def test_written_layout_and_yaml(tmp_path):
    root = write_synthetic_dataset(tmp_path / "demo", num_train=3, num_val=2, size=(64, 80), seed=1)
    assert root == tmp_path / "demo"
    for split, count in (("train", 3), ("val", 2)):
        names = [f"{i:04d}.png" for i in range(count)]
        assert sorted(p.name for p in (root / "images" / split).iterdir()) == names
        assert sorted(p.name for p in (root / "labels" / split).iterdir()) == names
        for name in names:
            image = Image.open(root / "images" / split / name)
            labels = Image.open(root / "labels" / split / name)
            assert (image.mode, image.size) == ("RGB", (80, 64))
            assert (labels.mode, labels.size) == ("L", (80, 64))
            assert np.asarray(labels).max() < K
    meta = yaml.safe_load((root / "classes.yaml").read_text())
    assert meta == {"classes": list(SYNTHETIC_CLASSES), "palette": SYNTHETIC_PALETTE.tolist()}
    assert json.loads((root / "synthetic.json").read_text())["size"] == [64, 80]


def test_written_scenes_match_the_split_streams(tmp_path):
    root = write_synthetic_dataset(tmp_path, num_train=2, num_val=2, size=(64, 64), seed=3)
    for split, stream in (("train", 0), ("val", 1)):
        rng = np.random.default_rng([3, stream])
        for i in range(2):
            image, labels = generate_scene(rng, (64, 64))
            assert np.array_equal(np.asarray(Image.open(root / "images" / split / f"{i:04d}.png")), image)
            assert np.array_equal(np.asarray(Image.open(root / "labels" / split / f"{i:04d}.png")), labels)


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = _tree(write_synthetic_dataset(tmp_path / "a", 2, 1, size=(48, 48), seed=0))
    b = _tree(write_synthetic_dataset(tmp_path / "b", 2, 1, size=(48, 48), seed=0))
    c = _tree(write_synthetic_dataset(tmp_path / "c", 2, 1, size=(48, 48), seed=1))
    assert a == b
    assert a["images/train/0000.png"] != c["images/train/0000.png"]


def test_regeneration_skipped_when_parameters_match(tmp_path):
    root = write_synthetic_dataset(tmp_path, 2, 1, size=(48, 48))
    marker = root / "images" / "train" / "0000.png"
    marker.write_bytes(b"left alone")
    write_synthetic_dataset(tmp_path, 2, 1, size=(48, 48))
    assert marker.read_bytes() == b"left alone"


@pytest.mark.parametrize("change", [{"seed": 1}, {"size": (48, 64)}, {"num_train": 3}])
def test_regeneration_redone_when_parameters_change(tmp_path, change):
    params = {"num_train": 2, "num_val": 1, "size": (48, 48), "seed": 0}
    root = write_synthetic_dataset(tmp_path, **params)
    marker = root / "images" / "train" / "0000.png"
    marker.write_bytes(b"stale")
    write_synthetic_dataset(tmp_path, **{**params, **change})
    assert marker.read_bytes() != b"stale"
    assert json.loads((root / "synthetic.json").read_text())["seed"] == change.get("seed", 0)


def test_regeneration_redone_when_a_file_is_missing_and_stale_files_removed(tmp_path):
    root = write_synthetic_dataset(tmp_path, 3, 2, size=(48, 48))
    (root / "labels" / "val" / "0001.png").unlink()
    write_synthetic_dataset(tmp_path, 3, 2, size=(48, 48))
    assert (root / "labels" / "val" / "0001.png").is_file()
    write_synthetic_dataset(tmp_path, 2, 2, size=(48, 48))  # fewer scenes: 0002.png must go
    assert sorted(p.name for p in (root / "images" / "train").iterdir()) == ["0000.png", "0001.png"]
    assert sorted(p.name for p in (root / "labels" / "train").iterdir()) == ["0000.png", "0001.png"]


@pytest.mark.parametrize("kwargs", [{"num_train": 0}, {"num_val": 0}, {"size": (16, 64)}, {"seed": -1}])
def test_bad_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(TransegError):
        write_synthetic_dataset(tmp_path, **{"num_train": 1, "num_val": 1, **kwargs})
