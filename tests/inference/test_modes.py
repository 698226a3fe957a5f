"""Whole / slide / ms+flip inference and the Predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import transeg
from transeg.errors import TransegError
from transeg.inference.modes import (
    Predictor,
    logits_to_labels,
    ms_flip_probs,
    normalize,
    passes_per_image,
    slide_logits,
    whole_logits,
)

K = 5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return transeg.create_model("segformer-b0", num_classes=K).eval()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _input(h: int, w: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


class Pointwise(nn.Module):
    """A 1x1 conv: same-resolution logits, each pixel depending on that pixel only."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)
        with torch.no_grad():  # integer weights and inputs keep every sum exact
            self.conv.weight.copy_(torch.arange(3 * classes).view(classes, 3, 1, 1) % 5 - 2.0)
            self.conv.bias.copy_(torch.arange(classes) - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class WindowOrigin(nn.Module):
    """Input channels 0/1 hold each pixel's row/column; returns, per window, a constant map
    (at half resolution) holding the window's top row, and records every window it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.boxes: list[tuple[int, int, int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        h, w = x.shape[-2:]
        for crop in x:
            y1, x1 = int(crop[0, 0, 0]), int(crop[1, 0, 0])
            self.boxes.append((y1, y1 + h, x1, x1 + w))
        top = x[:, :1, :1, :1]
        return top.expand(-1, 2, (h + 1) // 2, (w + 1) // 2).contiguous()


def _coords(h: int, w: int, offset: float = 0.0) -> torch.Tensor:
    rows = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
    return torch.stack([rows, cols, torch.zeros(h, w)])[None] + offset


# --- slide ------------------------------------------------------------------------------------

def test_slide_windows_border_shift_and_counts():
    # H=11, crop 4, stride 3: grid (11-4+2)//3+1 = 4 rows at 0, 3, 6 and 7 (shifted in from 9).
    # W=5, crop 4, stride 2: grid (5-4+1)//2+1 = 2 columns at 0 and 1 (shifted in from 2).
    rows, cols = [(0, 4), (3, 7), (6, 10), (7, 11)], [(0, 4), (1, 5)]
    expected_boxes = [(y1, y2, x1, x2) for y1, y2 in rows for x1, x2 in cols]
    toy = WindowOrigin()
    out = slide_logits(toy, _coords(11, 5), crop=(4, 4), stride=(3, 2), batch_size=3)
    assert toy.boxes == expected_boxes
    assert toy.calls == [2, 2, 2, 2]  # batches never span window rows: 2 windows a row, batch size 3
    total, count = np.zeros((11, 5)), np.zeros((11, 5))
    for y1, y2, x1, x2 in expected_boxes:
        total[y1:y2, x1:x2] += y1
        count[y1:y2, x1:x2] += 1
    assert out.shape == (1, 2, 11, 5)
    np.testing.assert_allclose(out[0, 0].numpy(), total / count, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[0, 1].numpy(), total / count, rtol=0, atol=1e-6)
    column = out[0, 0, :, 0].tolist()
    assert column[6] == pytest.approx(4.5) and column[9] == pytest.approx(6.5) and column[10] == 7.0


def test_slide_keeps_batch_items_apart():
    toy = WindowOrigin()
    x = torch.cat([_coords(9, 6), _coords(9, 6, offset=100.0)])
    out = slide_logits(toy, x, crop=(5, 6), stride=(4, 6), batch_size=2)
    single = slide_logits(WindowOrigin(), _coords(9, 6), crop=(5, 6), stride=(4, 6))
    torch.testing.assert_close(out[0], single[0], rtol=0, atol=0)
    torch.testing.assert_close(out[1], single[0] + 100.0, rtol=0, atol=1e-5)


def test_slide_pointwise_model_equals_whole():
    toy = Pointwise()
    x = torch.randint(-3, 4, (2, 3, 37, 53)).float()
    whole = whole_logits(toy, x)
    torch.testing.assert_close(whole, toy(x), rtol=0, atol=0)
    for crop, stride in [((16, 16), (8, 8)), ((20, 13), (7, 5)), ((37, 53), (1, 1)), (16, 16)]:
        out = slide_logits(toy, x, crop, stride, batch_size=5)
        torch.testing.assert_close(out, whole, rtol=0, atol=0)


def test_slide_crop_larger_than_image_is_the_image():
    toy = WindowOrigin()
    out = slide_logits(toy, _coords(6, 7), crop=(10, 20), stride=(5, 5))
    assert toy.boxes == [(0, 6, 0, 7)]
    assert out.shape == (1, 2, 6, 7)


def test_slide_one_window_equals_whole(model):
    x = _input(64, 96)
    with torch.inference_mode():
        whole = whole_logits(model, x)
        one = slide_logits(model, x, crop=(64, 96), stride=(32, 48))
        bigger = slide_logits(model, x, crop=(128, 128), stride=(64, 64))
    assert whole.shape == (1, K, 64, 96)
    torch.testing.assert_close(one, whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(bigger, whole, rtol=0, atol=1e-5)


def test_slide_overlapping_windows_on_real_model(model):
    x = _input(64, 96)
    with torch.inference_mode():
        out = slide_logits(model, x, crop=(48, 48), stride=(32, 32), batch_size=2)
        # By hand: rows [0,48), [16,64); columns [0,48), [32,80), [48,96).
        total = torch.zeros(1, K, 64, 96)
        count = torch.zeros(1, 1, 64, 96)
        for y1 in (0, 16):
            for x1 in (0, 32, 48):
                crop = x[:, :, y1:y1 + 48, x1:x1 + 48]
                total[:, :, y1:y1 + 48, x1:x1 + 48] += F.interpolate(
                    model(crop), size=(48, 48), mode="bilinear", align_corners=False)
                count[:, :, y1:y1 + 48, x1:x1 + 48] += 1
    torch.testing.assert_close(out, total / count, rtol=0, atol=1e-5)


# --- whole ------------------------------------------------------------------------------------

def test_whole_size_divisor_resizes_input():
    seen = []

    def toy(x):
        seen.append(tuple(x.shape[-2:]))
        return x[:, :2, ::4, ::4]

    out = whole_logits(toy, _input(65, 97), size_divisor=32)
    assert seen == [(96, 128)]
    assert out.shape == (1, 2, 65, 97)
    whole_logits(toy, _input(10, 31), size_divisor=32)
    assert seen[-1] == (32, 32)  # at least one multiple


def test_whole_upsamples_like_bilinear(model):
    x = _input(37, 53)
    with torch.inference_mode():
        out = whole_logits(model, x)
        expected = F.interpolate(model(x), size=(37, 53), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


# --- ms + flip --------------------------------------------------------------------------------

def test_ms_flip_single_scale_no_flip_is_softmax_whole(model):
    x = _input(64, 96)
    with torch.inference_mode():
        probs = ms_flip_probs(model, x, scales=(1.0,), flip=False)
        whole = whole_logits(model, x)
    torch.testing.assert_close(probs, whole.softmax(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 64, 96))


def test_ms_flip_matches_manual_average(model):
    x = _input(64, 96)
    with torch.inference_mode():
        probs = ms_flip_probs(model, x, scales=(0.5, 1.0), flip=True)
        parts = []
        for size in [(32, 48), (64, 96)]:
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if size != (64, 96) else x
            for flipped in (False, True):
                inp = xs.flip(-1) if flipped else xs
                logits = F.interpolate(model(inp), size=size, mode="bilinear", align_corners=False)
                logits = logits.flip(-1) if flipped else logits
                logits = F.interpolate(logits, size=(64, 96), mode="bilinear", align_corners=False)
                parts.append(logits.softmax(1))
    torch.testing.assert_close(probs, torch.stack(parts).mean(0), rtol=0, atol=1e-5)
    # The flip does something on a real (not flip-equivariant) model.
    assert not torch.allclose(probs, ms_flip_probs(model, x, scales=(0.5, 1.0), flip=False), atol=1e-4)


def test_ms_flip_equivariant_model_flip_invariant():
    toy = Pointwise()
    x = _input(20, 30)
    for scales in [(1.0,), (0.5, 1.0, 1.5)]:
        on = ms_flip_probs(toy, x, scales=scales, flip=True)
        off = ms_flip_probs(toy, x, scales=scales, flip=False)
        torch.testing.assert_close(on, off, rtol=0, atol=1e-6)


def test_ms_flip_slide_base_mode():
    toy = Pointwise()
    x = torch.randint(-3, 4, (1, 3, 30, 40)).float()
    slide = ms_flip_probs(toy, x, scales=(1.0,), mode="slide", crop=(16, 16), stride=(8, 8))
    torch.testing.assert_close(slide, toy(x).softmax(1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(65, 97), (37, 53)])
def test_odd_sizes_come_back_at_input_size(model, size):
    x = _input(*size)
    with torch.inference_mode():
        assert whole_logits(model, x).shape == (1, K, *size)
        assert whole_logits(model, x, size_divisor=32).shape == (1, K, *size)
        assert slide_logits(model, x, (32, 32), (24, 24)).shape == (1, K, *size)
        # (MiT's stride-8 reduction conv needs inputs of at least 29 pixels a side.)
        assert ms_flip_probs(model, x, scales=(0.9, 1.25)).shape == (1, K, *size)
        assert ms_flip_probs(model, x, scales=(1.1,), mode="slide", crop=32, stride=20).shape == (1, K, *size)


# --- labels, binary ---------------------------------------------------------------------------

def test_logits_to_labels_multiclass_and_binary():
    logits = torch.tensor([[[[0.1, 2.0]], [[0.5, -1.0]], [[0.0, 3.0]]]])  # (1, 3, 1, 2)
    assert logits_to_labels(logits).tolist() == [[[1, 2]]]
    binary = torch.tensor([[[[-0.5, 0.0, 0.7]]]])  # (1, 1, 1, 3)
    assert logits_to_labels(binary).tolist() == [[[0, 0, 1]]]


def test_ms_flip_binary_uses_sigmoid():
    toy = Pointwise(classes=1)
    x = _input(12, 10)
    probs = ms_flip_probs(toy, x, scales=(1.0,), flip=False)
    torch.testing.assert_close(probs, torch.sigmoid(toy(x)), rtol=0, atol=1e-6)


def test_normalize():
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[0, 1] = (255, 128, 0)
    x = normalize(image, mean=(100.0, 50.0, 0.0), std=(5.0, 2.0, 1.0))
    assert x.shape == (1, 3, 2, 3) and x.dtype == torch.float32
    assert x[0, :, 0, 1].tolist() == [31.0, 39.0, 0.0]
    assert x[0, :, 1, 2].tolist() == [-20.0, -25.0, 0.0]


# --- Predictor --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"mode": "whole"},
    {"mode": "whole", "size_divisor": 32},
    {"mode": "slide", "crop": 32, "stride": (24, 20)},
    {"mode": "ms-flip", "scales": (1.0, 1.5)},
    {"mode": "ms-flip", "scales": (1.0,), "crop": 32, "stride": 24},
])
def test_predictor_modes(model, kwargs):
    image = _image(37, 53)
    predictor = Predictor(model, **kwargs)
    labels = predictor.predict(image)
    assert labels.shape == (37, 53) and labels.dtype == np.uint8
    assert labels.max() < K
    logits = predictor.predict_logits(image)
    assert logits.shape == (1, K, 37, 53)
    np.testing.assert_array_equal(labels, logits.argmax(1)[0].numpy())


def test_predictor_whole_matches_functions(model):
    image = _image(64, 96, seed=3)
    model.train()
    labels = Predictor(model).predict(image)
    assert not model.training
    with torch.inference_mode():
        x = normalize(image, model.config.mean, model.config.std)
        expected = logits_to_labels(whole_logits(model, x))[0].numpy()
    np.testing.assert_array_equal(labels, expected)


def test_predictor_ms_flip_logits_give_back_probabilities(model):
    image = _image(40, 40)
    logits = Predictor(model, mode="ms-flip", scales=(1.0, 1.25)).predict_logits(image)
    with torch.inference_mode():
        x = normalize(image, model.config.mean, model.config.std)
        probs = ms_flip_probs(model, x, scales=(1.0, 1.25))
    torch.testing.assert_close(logits.softmax(1), probs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["whole", "ms-flip"])
def test_predictor_binary(mode):
    torch.manual_seed(0)
    binary = transeg.create_model("segformer-b0", num_classes=1)
    predictor = Predictor(binary, mode=mode, scales=(1.0,))
    labels = predictor.predict(_image(33, 45))
    assert labels.shape == (33, 45)
    assert set(np.unique(labels)) <= {0, 1}
    logits = predictor.predict_logits(_image(33, 45))
    np.testing.assert_array_equal(labels, (logits[0, 0] > 0).numpy())


@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "sliding"}, "sliding"),
    ({"mode": "slide"}, "crop and stride"),
    ({"mode": "slide", "crop": 32}, "together"),
    ({"mode": "slide", "crop": 0, "stride": 16}, "crop"),
    ({"mode": "slide", "crop": (32, -1), "stride": 16}, "crop"),
    ({"mode": "slide", "crop": 32.5, "stride": 16}, "crop"),
    ({"mode": "slide", "crop": 32, "stride": 48}, "gaps"),
    ({"mode": "slide", "crop": 32, "stride": 16, "size_divisor": 32}, "size_divisor"),
    ({"mode": "whole", "crop": 32, "stride": 16}, "whole"),
    ({"mode": "whole", "size_divisor": 0}, "size_divisor"),
    ({"mode": "whole", "batch_size": 0}, "batch_size"),
    ({"mode": "ms-flip", "scales": ()}, "scales"),
    ({"mode": "ms-flip", "scales": (1.0, -0.5)}, "scales"),
    ({"mode": "whole", "device": "nonsense"}, "nonsense"),
])
def test_predictor_bad_arguments(model, kwargs, message):
    with pytest.raises(TransegError, match=message):
        Predictor(model, **kwargs)


def test_predictor_bad_image(model):
    predictor = Predictor(model)
    with pytest.raises(TransegError, match="uint8"):
        predictor.predict(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(TransegError, match="uint8"):
        predictor.predict(np.zeros((8, 8), dtype=np.uint8))


def test_functions_validate_arguments(model):
    x = _input(16, 16)
    with pytest.raises(TransegError, match="stride"):
        slide_logits(model, x, crop=(8, 8), stride=(0, 4))
    with pytest.raises(TransegError, match="'tile'"):
        ms_flip_probs(model, x, mode="tile")
    with pytest.raises(TransegError, match="crop and stride"):
        ms_flip_probs(model, x, mode="slide")


@pytest.mark.parametrize(("options", "expected"), [
    ({"mode": "whole"}, 1),
    ({"mode": "slide", "crop": 96, "stride": 96}, 1),
    ({"mode": "ms-flip", "scales": (0.5, 1.0, 1.5), "flip": False}, 3),
    ({"mode": "ms-flip", "scales": (0.5, 1.0, 1.5), "flip": True}, 6),
])
def test_passes_per_image_counts_the_predictors_forward_passes(model, options, expected):
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        Predictor(model, **options).predict(_image(96, 80))
    finally:
        hook.remove()
    assert passes_per_image(options["mode"], options.get("scales", ()), options.get("flip", False)) == expected
    assert len(calls) == expected
