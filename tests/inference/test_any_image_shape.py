"""Any image shape: tiny and thin images are zero-padded to the model's minimum and cropped back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import transeg
from transeg.errors import TransegError
from transeg.inference.backends import AutocastSegmentor, onnx_available, optimize_for_inference
from transeg.inference.modes import Predictor, normalize, padded_forward

K = 4
MODES = [
    {"mode": "whole"},
    {"mode": "whole", "size_divisor": 32},
    {"mode": "slide", "crop": 32, "stride": 24},
    {"mode": "ms-flip", "scales": (0.5, 1.25), "flip": True},
    {"mode": "ms-flip", "scales": (0.75,), "flip": False, "crop": 32, "stride": 24},
]
SHAPES = [(1, 1), (3, 70), (50, 2)]


@pytest.fixture(scope="module", params=["segformer-b0", "segmenter-t16-linear", "segformer-swin-t"])
def model(request):
    torch.manual_seed(0)
    return transeg.create_model(request.param, num_classes=K).eval()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class Declaring(nn.Module):
    """``model`` declaring a larger ``min_input_size``, to compare the padded path with the direct one."""

    def __init__(self, model: transeg.Segmentor, least: int) -> None:
        super().__init__()
        self.model, self.config, self.min_input_size = model, model.config, least

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@pytest.mark.parametrize("kwargs", MODES, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_tiny_and_thin_images_give_labels_of_their_shape(model, kwargs):
    predictor = Predictor(model, **kwargs)
    for h, w in SHAPES:
        labels = predictor.predict(_image(h, w))
        assert labels.shape == (h, w), (model.config.name, kwargs, (h, w))
        assert labels.max() < K


def test_declared_minimum_is_exact():
    mit = transeg.create_model("segformer-b0", num_classes=K).eval()
    assert mit.min_input_size == 29
    with torch.inference_mode():
        assert mit(torch.zeros(1, 3, 29, 29)).shape == (1, K, 8, 8)
        with pytest.raises(RuntimeError):
            mit(torch.zeros(1, 3, 28, 29))


@pytest.mark.parametrize("name", ["segmenter-t16-linear", "segformer-swin-t", "segformer-r101"])
def test_encoders_declaring_no_minimum_run_on_one_pixel(name):
    other = transeg.create_model(name, num_classes=K).eval()
    assert other.min_input_size == 1
    with torch.inference_mode():
        assert other(torch.zeros(1, 3, 1, 1)).shape[:2] == (1, K)


def test_no_padding_at_or_above_the_minimum():
    mit = transeg.create_model("segformer-b0", num_classes=K).eval()
    x = torch.randn(1, 3, 29, 31)
    with torch.inference_mode():
        torch.testing.assert_close(padded_forward(mit, x), mit(x), rtol=0, atol=0)


def test_padding_within_the_vit_patch_is_exact():
    # ViT zero-pads to its patch size itself: padding a 10x7 image to 16 first feeds it the same input
    torch.manual_seed(0)
    vit = transeg.create_model("segmenter-t16-linear", num_classes=K).eval()
    x = normalize(_image(10, 7), vit.config.mean, vit.config.std)
    with torch.inference_mode():
        torch.testing.assert_close(padded_forward(Declaring(vit, 16), x), vit(x), rtol=0, atol=0)


class Pointwise(nn.Module):
    """A 1x1 conv declaring a minimum of 16: each output pixel depends on its input pixel only."""

    min_input_size = 16

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, K, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_padding_is_at_the_bottom_right_and_cropped_back_exactly():
    torch.manual_seed(0)
    model, x = Pointwise(), torch.randn(2, 3, 5, 9)
    with torch.inference_mode():
        torch.testing.assert_close(padded_forward(model, x), model(x), rtol=0, atol=0)


def test_whole_mode_still_refuses_huge_images():
    mit = transeg.create_model("segformer-b0", num_classes=K)
    with pytest.raises(TransegError, match="too large for whole-image inference"):
        Predictor(mit, max_whole_pixels=1000).predict(_image(1, 1001))
    with pytest.raises(TransegError, match="too large for whole-image inference"):
        Predictor(mit).predict(np.zeros((4097, 4097, 3), dtype=np.uint8))


def test_bf16_autocast_backend_pads():
    mit = transeg.create_model("segformer-b0", num_classes=K).eval()
    runner = optimize_for_inference(mit, backend="eager", precision="bf16")
    assert isinstance(runner, AutocastSegmentor) and runner.min_input_size == 29
    for mode in MODES:
        assert Predictor(runner, **mode).predict(_image(3, 50)).shape == (3, 50)


@pytest.mark.slow  # the ONNX export takes about a minute on two cores
@pytest.mark.skipif(not onnx_available(), reason="needs the onnx extra")
def test_onnx_backend_pads(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSEG_CACHE", str(tmp_path))
    torch.manual_seed(0)
    mit = transeg.create_model("segformer-b0", num_classes=K).eval()
    runner = optimize_for_inference(mit, backend="onnx")
    assert runner.min_input_size == 29
    image = _image(5, 37)
    for mode in MODES:
        labels = Predictor(runner, **mode).predict(image)
        assert labels.shape == (5, 37)
        assert (labels == Predictor(mit, **mode).predict(image)).mean() >= 0.99


def test_predictor_names_a_missing_min_input_size():
    class Undeclared(nn.Module):
        config = transeg.create_model("segformer-b0", num_classes=K).config
        num_classes = K

    with pytest.raises(TransegError, match="min_input_size"):
        Predictor(Undeclared())
