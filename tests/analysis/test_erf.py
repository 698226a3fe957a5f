"""Effective receptive fields (transeg.analysis.erf, ``transeg erf``) on tiny inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from transeg.analysis.erf import check_size, compute_erf, erf_of_files, image_gradients, mass_radii
from transeg.api import create_model
from transeg.cli import cli
from transeg.errors import TransegError
from transeg.models.decoders.mlp import MLPDecoder, MLPDecoderConfig
from transeg.models.encoders.base import Encoder
from transeg.models.segmentor import Segmentor
from transeg.models.zoo import model_config


class ConvStack(Encoder):
    """Two stages of 3x3 stride-2 convs (+ Softplus): (B, 3, H, W) -> [(B, 8, H/2, W/2), (B, 16, H/4, W/4)].

    Stage-1 output i sees input rows 2i-1 … 2i+1, stage-2 output j rows 4j-3 … 4j+3."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Softplus())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.Softplus())
        self.out_channels = (8, 16)
        self.strides = (2, 4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stage1(x)
        return [f1, self.stage2(f1)]


@pytest.fixture(scope="module")
def conv_model() -> Segmentor:
    torch.manual_seed(0)
    encoder = ConvStack()
    decoder = MLPDecoder(encoder.out_channels, 4, MLPDecoderConfig(embed_dim=8))
    return Segmentor(encoder, decoder, model_config("segformer-b0", 4)).eval()


def box(h: int, w: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[max(rows[0], 0):rows[1] + 1, max(cols[0], 0):cols[1] + 1] = True
    return mask


def test_conv_erf_is_its_theoretical_receptive_field(conv_model):
    x = torch.randn(1, 3, 64, 64)
    (g1, g2, head), sizes = image_gradients(conv_model, x)
    assert sizes == [(32, 32), (16, 16), (32, 32)]
    # stage 1: centre (16, 16) sees rows/cols 31..33; stage 2: centre (8, 8) sees 29..35
    for grad, (lo, hi) in ((g1, (31, 33)), (g2, (29, 35))):
        inside = box(64, 64, (lo, hi), (lo, hi))
        assert np.all(grad[~inside] == 0)
        assert np.all(grad[inside] > 0)
    # the head at (16, 16) mixes stage 1 there with stage-2 rows/cols 7 and 8 (bilinear): input 25..35
    assert np.all(head[~box(64, 64, (25, 35), (25, 35))] == 0) and head[32, 32] > 0


def test_erf_averages_images_and_restores_the_model(conv_model):
    conv_model.train()
    flags = [p.requires_grad for p in conv_model.parameters()]
    xs = [torch.randn(1, 3, 64, 64) for _ in range(2)]
    result = compute_erf(conv_model, iter(xs), show_progress=False)
    assert conv_model.training and flags == [p.requires_grad for p in conv_model.parameters()]
    conv_model.eval()
    per_image = [image_gradients(conv_model, x)[0] for x in xs]
    for k, erf in enumerate(result.maps):
        np.testing.assert_allclose(erf, (per_image[0][k] + per_image[1][k]) / 2, rtol=1e-5)
    assert result.names == ["stage1", "stage2", "head"] and result.images == 2


def test_mass_radii():
    delta = np.zeros((21, 21))
    delta[10, 10] = 1.0
    assert mass_radii(delta) == {"centroid_px": [10.0, 10.0], "radius_50_px": 0.0, "radius_90_px": 0.0}
    ys, xs = np.indices((201, 201))
    disc = (np.hypot(ys - 100, xs - 100) <= 80).astype(float)  # uniform: r_q = 80 sqrt(q)
    radii = mass_radii(disc)
    assert radii["radius_50_px"] == pytest.approx(80 * 0.5 ** 0.5, abs=1)
    assert radii["radius_90_px"] == pytest.approx(80 * 0.9 ** 0.5, abs=1)
    assert mass_radii(np.zeros((4, 4)))["radius_50_px"] is None


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("erf_images")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_mit_stage4_erf_is_wider_than_stage1(images):
    torch.manual_seed(0)
    model = create_model("segformer-b0", num_classes=4)
    result = erf_of_files(model, sorted(images.iterdir()), (64, 64), show_progress=False)
    assert result.feature_sizes == [(16, 16), (8, 8), (4, 4), (2, 2), (16, 16)]
    r90 = {name: s["radius_90_px"] for name, s in zip(result.names, result.summaries, strict=True)}
    r50 = {name: s["radius_50_px"] for name, s in zip(result.names, result.summaries, strict=True)}
    assert r90["stage4"] >= r90["stage1"] and r50["stage4"] > r50["stage1"]


def test_check_size():
    assert check_size((64, 96)) == (64, 96)
    for bad in ((16, 64), (0, 0), (64,), (64.0, 64)):
        with pytest.raises(TransegError):
            check_size(bad)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_writes_the_figure_maps_and_json(images, tmp_path):
    result = run("erf", "segformer-b0", images, "--num-classes", "4", "--size", "64", "64", "--limit", "2",
                 "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "Stage-4" in result.output and "Head" in result.output
    names = ["stage1", "stage2", "stage3", "stage4", "head"]
    for name in ("erf", *(f"erf_{n}" for n in names)):
        assert Image.open(tmp_path / f"{name}.png").size[0] > 0
    assert Image.open(tmp_path / "erf_head.png").size == (64, 64)
    summary = json.loads((tmp_path / "erf.json").read_text())
    assert list(summary["maps"]) == names and summary["images"] == 2 and summary["size"] == [64, 64]
    assert all(summary["maps"][n]["radius_90_px"] >= summary["maps"][n]["radius_50_px"] >= 0 for n in names)


@pytest.mark.parametrize("case", ["no images", "empty folder", "bad size", "unreadable", "bad limit"])
def test_cli_errors_are_one_line(case, images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    (tmp_path / "empty").mkdir()
    args = {"no images": [], "empty folder": [tmp_path / "empty"], "bad size": [images, "--size", "8", "8"],
            "unreadable": [bad], "bad limit": [images, "--limit", "0"]}[case]
    result = run("erf", "segformer-b0", *args, "--out", tmp_path / "out")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
