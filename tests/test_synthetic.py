"""The demo's procedural scenes: deterministic, well-formed, and not solvable by colour alone."""

from __future__ import annotations

import numpy as np
import yaml

from transeg.data.synthetic import SYNTHETIC_CLASSES, generate_scene, write_synthetic_dataset


def test_scenes_are_deterministic_and_well_formed():
    a_img, a_lbl = generate_scene(np.random.default_rng(7), (96, 128))
    b_img, b_lbl = generate_scene(np.random.default_rng(7), (96, 128))
    c_img, _ = generate_scene(np.random.default_rng(8), (96, 128))
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lbl, b_lbl)
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (96, 128, 3) and a_img.dtype == np.uint8
    assert a_lbl.shape == (96, 128) and a_lbl.max() < len(SYNTHETIC_CLASSES)


def test_every_class_appears():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(8):
        seen |= set(np.unique(generate_scene(rng, (128, 128))[1]).tolist())
    assert seen == set(range(len(SYNTHETIC_CLASSES)))


def test_colour_alone_does_not_separate_the_classes():
    """Nearest class-mean colour, fitted on some scenes, is far from perfect on others."""
    rng = np.random.default_rng(1)
    train = [generate_scene(rng, (64, 64)) for _ in range(20)]
    test = [generate_scene(rng, (64, 64)) for _ in range(10)]
    pixels = np.concatenate([img.reshape(-1, 3) for img, _ in train]).astype(np.float32)
    labels = np.concatenate([lbl.ravel() for _, lbl in train])
    means = np.stack([pixels[labels == c].mean(0) for c in range(len(SYNTHETIC_CLASSES))])
    correct = total = 0
    for img, lbl in test:
        distances = ((img.reshape(-1, 1, 3).astype(np.float32) - means[None]) ** 2).sum(-1)
        object_pixels = lbl.ravel() > 0
        correct += (distances.argmin(1) == lbl.ravel())[object_pixels].sum()
        total += object_pixels.sum()
    assert correct / total < 0.5


def test_written_layout_and_regeneration(tmp_path):
    root = write_synthetic_dataset(tmp_path / "s", num_train=3, num_val=2, size=(48, 64), seed=3)
    assert sorted(p.name for p in (root / "images" / "train").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert len(list((root / "labels" / "val").iterdir())) == 2
    classes = yaml.safe_load((root / "classes.yaml").read_text())
    assert classes["classes"] == list(SYNTHETIC_CLASSES) and len(classes["palette"]) == len(SYNTHETIC_CLASSES)
    stamp = (root / "images" / "train" / "0000.png").stat().st_mtime_ns
    write_synthetic_dataset(root, num_train=3, num_val=2, size=(48, 64), seed=3)
    assert (root / "images" / "train" / "0000.png").stat().st_mtime_ns == stamp, "regenerated needlessly"
    write_synthetic_dataset(root, num_train=2, num_val=2, size=(48, 64), seed=4)
    assert len(list((root / "images" / "train").iterdir())) == 2
