"""Transforms: determinism, label integrity, image/label alignment, mmseg semantics."""

import colorsys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transeg.data import transforms as T

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)], dtype=np.uint8)


def blocky_sample(h: int = 96, w: int = 128, block: int = 16, seed: int = 0) -> dict:
    """Label of random ``block``-sized squares (classes 0..4, some 255); image = colour of its label."""
    rng = np.random.default_rng(seed)
    cells = rng.choice([0, 1, 2, 3, 4, 255], size=(-(-h // block), -(-w // block)))
    label = np.kron(cells, np.ones((block, block), dtype=np.int64))[:h, :w].astype(np.uint8)
    image = np.where(label[..., None] == 255, 128, COLOURS[np.minimum(label, 4)]).astype(np.uint8)
    return {"image": image, "label": label}


def decode_colours(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) → (H, W) index of the nearest colour (5 = the grey of ignored pixels)."""
    palette = np.concatenate([COLOURS, [(128, 128, 128)]]).astype(np.float32)
    dist = ((image[..., None, :].astype(np.float32) - palette) ** 2).sum(-1)
    return dist.argmin(-1)


def interior(label: np.ndarray, radius: int = 2) -> np.ndarray:
    """(H, W) bool: pixels whose (2r+1)² neighbourhood lies inside and has one label value."""
    padded = np.pad(label.astype(np.int64), radius, constant_values=-1)
    h, w = label.shape
    same = np.ones_like(label, dtype=bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            same &= padded[dy : dy + h, dx : dx + w] == label
    return same


def geometric_pipeline(crop: int = 64) -> T.Compose:
    """The train pipeline without the photometric step, so colours still encode classes."""
    full = T.train_transforms(crop, (128, 64), (0.5, 2.0), MEAN, STD)
    return T.Compose([t for t in full.transforms if not isinstance(t, T.PhotoMetricDistortion)])


def denormalise(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) normalised tensor → (H, W, 3) float array in 0..255."""
    return image.numpy().transpose(1, 2, 0) * np.array(STD) + np.array(MEAN)


def test_train_pipeline_is_deterministic_per_seed():
    pipeline = T.train_transforms(64, (128, 64), (0.5, 2.0), MEAN, STD)
    sample = blocky_sample()
    a = pipeline(sample, np.random.default_rng(7))
    b = pipeline(sample, np.random.default_rng(7))
    c = pipeline(sample, np.random.default_rng(8))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(a["image"], c["image"])


def test_train_pipeline_output_types_and_shapes():
    pipeline = T.train_transforms((48, 64), (128, 64), (0.5, 2.0), MEAN, STD)
    out = pipeline(blocky_sample(), np.random.default_rng(0))
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 48, 64)
    assert out["label"].dtype == torch.int64 and out["label"].shape == (48, 64)


@pytest.mark.parametrize("seed", range(6))
def test_image_and_label_stay_aligned(seed):
    out = geometric_pipeline()(blocky_sample(seed=seed), np.random.default_rng(seed))
    label = out["label"].numpy()
    decoded = decode_colours(denormalise(out["image"]))
    expected = np.where(label == 255, 5, label)
    inside = interior(label) & (out["image"].abs().sum(0).numpy() > 0)  # skip padding
    assert inside.sum() > 100
    assert np.array_equal(decoded[inside], expected[inside])


@pytest.mark.parametrize("seed", range(4))
def test_alignment_survives_the_full_pipeline(seed):
    """Grey levels survive photometric distortion in order: dark pixels ↔ even labels."""
    label = blocky_sample(seed=seed)["label"] % 4
    sample = {"image": np.where(label[..., None] % 2 == 0, 40, 215).astype(np.uint8).repeat(3, axis=2),
              "label": label}
    out = T.train_transforms(64, (128, 64), (0.5, 2.0), MEAN, STD)(sample, np.random.default_rng(seed))
    label = out["label"].numpy()
    grey = denormalise(out["image"]).mean(-1)
    inside = interior(label) & (label != 255)
    dark = grey < (grey[inside].min() + grey[inside].max()) / 2
    assert np.array_equal(dark[inside], label[inside] % 2 == 0)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(4, 40),
    w=st.integers(4, 40),
    values=st.lists(st.integers(0, 254), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_label_values_are_preserved_by_geometric_steps(h, w, values, seed):
    rng = np.random.default_rng(seed)
    label = rng.choice(values, size=(h, w)).astype(np.uint8)
    sample = {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "label": label}
    steps = [T.RandomResize((40, 20), (0.5, 2.0)), T.RandomCrop(16, 0.75), T.RandomFlip(), T.Pad(16)]
    out = T.Compose(steps)(sample, rng)
    assert set(np.unique(out["label"])) <= set(values) | {255}
    assert out["label"].shape == out["image"].shape[:2] and out["label"].dtype == np.uint8


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), ratio=st.floats(0.5, 2.0))
def test_random_resize_fits_inside_the_scaled_box(h, w, ratio):
    sample = {"image": np.zeros((h, w, 3), np.uint8), "label": np.zeros((h, w), np.uint8)}
    out = T.RandomResize((200, 50), (ratio, ratio))(sample, np.random.default_rng(0))
    long_box, short_box = int(200 * ratio), int(50 * ratio)
    new_h, new_w = out["image"].shape[:2]
    assert out["label"].shape == (new_h, new_w)
    assert max(new_h, new_w) <= long_box and min(new_h, new_w) <= short_box
    assert max(new_h, new_w) >= long_box - 1 or min(new_h, new_w) >= short_box - 1  # one edge touches


def test_rescale_size_matches_mmcv():
    assert T.rescale_size(512, 683, (2048, 512)) == (512, 683)  # ADE-like: short edge binds
    assert T.rescale_size(1024, 2048, (2048, 512)) == (512, 1024)
    assert T.rescale_size(100, 1000, (2048, 512)) == (205, 2048)  # long edge binds
    assert T.rescale_size(1, 5000, (100, 50)) == (1, 100)  # thin images keep one pixel


def test_resize_size_divisor_and_label_kept_at_original_size():
    sample = blocky_sample(h=50, w=70)
    out = T.Resize((100, 60), size_divisor=32, resize_label=False)(sample, np.random.default_rng(0))
    assert out["image"].shape == (64, 96, 3)  # 60x84 rounded up to multiples of 32
    assert out["label"] is sample["label"]
    exact = T.Resize((30, 20), keep_ratio=False)(sample, np.random.default_rng(0))
    assert exact["image"].shape == (20, 30, 3) and exact["label"].shape == (20, 30)


def test_resize_label_keeps_wide_dtypes_and_values():
    label = np.array([[0, 300], [70000, 5]], dtype=np.int64)
    resized = T.resize_label(label, 4, 4)
    assert resized.dtype == np.int64 and set(np.unique(resized)) == {0, 5, 300, 70000}


def test_pad_uses_255_for_labels_and_pad_val_for_images():
    sample = {"image": np.full((3, 4, 3), 9, np.uint8), "label": np.ones((3, 4), np.uint8)}
    out = T.Pad((5, 6), pad_val=7)(sample, np.random.default_rng(0))
    image, label = out["image"], out["label"]
    assert image.shape == (5, 6, 3) and (image[3:] == 7).all() and (image[:, 4:] == 7).all()
    assert (image[:3, :4] == 9).all()
    assert (label[3:] == 255).all() and (label[:, 4:] == 255).all() and (label[:3, :4] == 1).all()


def test_pad_after_normalize_pads_tensors_with_zero():
    raw = {"image": np.full((3, 4, 3), 200, np.uint8), "label": np.zeros((3, 4), np.uint8)}
    sample = T.Normalize(MEAN, STD)(raw, np.random.default_rng(0))
    out = T.Pad(6)(sample, np.random.default_rng(0))
    assert out["image"].shape == (3, 6, 6) and (out["image"][:, 3:] == 0).all()
    assert out["label"].shape == (6, 6) and (out["label"][:, 4:] == 255).all()


def test_random_crop_smaller_image_and_missing_label():
    sample = {"image": np.zeros((10, 30, 3), np.uint8)}
    out = T.RandomCrop((20, 16))(sample, np.random.default_rng(0))
    assert out["image"].shape == (10, 16, 3) and "label" not in out


def _crop_is_balanced(label: np.ndarray, ratio: float) -> bool:
    values, counts = np.unique(label[label != 255], return_counts=True)
    return len(values) > 1 and counts.max() / counts.sum() < ratio


def test_cat_max_ratio_retries_towards_balanced_crops():
    """Only offsets ≥ 76 of 0..80 give a crop with class 0 under 75%; retries make them common."""
    label = np.zeros((20, 100), np.uint8)
    label[:, 90:] = np.arange(10) % 2 + 1
    sample = {"image": np.zeros((20, 100, 3), np.uint8), "label": label}

    def balanced_share(ratio: float) -> float:
        crop = T.RandomCrop(20, cat_max_ratio=ratio)
        hits = [_crop_is_balanced(crop(sample, np.random.default_rng(s))["label"], 0.75) for s in range(200)]
        return float(np.mean(hits))

    assert balanced_share(1.0) < 0.15 < 0.35 < balanced_share(0.75)


def test_cat_max_ratio_gives_up_after_ten_tries_and_ignores_255():
    label = np.zeros((30, 30), np.uint8)
    label[:, 15:] = 255  # one class plus ignore: never "balanced"
    sample = {"image": np.zeros((30, 30, 3), np.uint8), "label": label}
    out = T.RandomCrop(10)(sample, np.random.default_rng(0))
    assert out["label"].shape == (10, 10)


def test_flip_is_horizontal_and_keeps_alignment():
    sample = blocky_sample(h=8, w=8, block=2)
    flipped = T.RandomFlip(prob=1.0)(sample, np.random.default_rng(0))
    assert np.array_equal(flipped["image"], sample["image"][:, ::-1])
    assert np.array_equal(flipped["label"], sample["label"][:, ::-1])
    assert T.RandomFlip(prob=0.0)(sample, np.random.default_rng(0)) is sample


def test_hsv_round_trip_matches_colorsys():
    rgb = np.random.default_rng(0).integers(0, 256, (200, 3)).astype(np.float32)
    hsv = T.rgb_to_hsv(rgb)
    for (r, g, b), (h, s, v) in zip(rgb[:20], hsv[:20], strict=True):
        eh, es, ev = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        assert h == pytest.approx(eh * 360, abs=1e-3) and s == pytest.approx(es, abs=1e-5)
        assert v == pytest.approx(ev * 255, abs=1e-3)
    np.testing.assert_allclose(T.hsv_to_rgb(hsv), rgb, atol=1e-3)


def test_photometric_distortion_is_seeded_and_leaves_grey_hue_alone():
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pmd = T.PhotoMetricDistortion()
    outs = [pmd({"image": image}, np.random.default_rng(s))["image"] for s in (3, 3, 4)]
    assert outs[0].dtype == np.uint8 and outs[0].shape == image.shape
    assert np.array_equal(outs[0], outs[1])
    grey = np.full((4, 4, 3), 100, np.uint8)
    for s in range(10):
        out = pmd({"image": grey}, np.random.default_rng(s))["image"]
        assert (out == out[..., :1]).all()  # saturation and hue cannot colour a grey image


def test_test_transforms_resize_image_only():
    sample = blocky_sample(h=45, w=60)
    out = T.eval_transforms((128, 64), MEAN, STD, size_divisor=32)(sample, np.random.default_rng(0))
    assert out["image"].shape == (3, 64, 96)  # 64x85 → multiples of 32
    assert out["label"].shape == (45, 60) and out["label"].dtype == torch.int64


@settings(max_examples=25, deadline=None)
@given(h=st.integers(8, 60), w=st.integers(8, 60), crop=st.integers(8, 40), seed=st.integers(0, 2**16))
def test_image_and_label_stay_aligned_and_padding_is_ignore(h, w, crop, seed):
    """Each pixel's colour encodes its label, so the pair must still agree after every geometric step."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 5, (h, w)).astype(np.uint8)
    image = np.repeat((label * 50)[..., None], 3, axis=2).astype(np.uint8)
    steps = [T.RandomCrop(crop, 1.0), T.RandomFlip(), T.Pad(crop, pad_val=255, seg_pad_val=255)]
    out = T.Compose(steps)(dict(image=image, label=label), rng)
    padded = out["label"] == 255
    assert np.array_equal(out["image"][..., 0][~padded], out["label"][~padded] * 50)
    assert (out["image"][padded] == 255).all()
    assert out["label"].shape == (crop, crop)  # cropped to at most, then padded to, the crop size
