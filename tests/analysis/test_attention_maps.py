"""Patch attention maps of a ViT (Segmenter Fig. 1, transeg.analysis.attention_maps) on a tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from transeg.analysis.attention_maps import attention_of_file, patch_attention, write_outputs
from transeg.api import create_model
from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.decoders.mask_transformer import MaskTransformerConfig
from transeg.models.encoders.vit import ViTConfig
from transeg.models.factory import build_model


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    """Patch 8, width 24, 3 heads of 8 channels, 2 blocks, a class and a distillation token."""
    vit = ViTConfig(patch_size=8, embed_dim=24, depth=2, heads=3, image_size=32, distilled=True, drop_path_rate=0.0)
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="vit", encoder_config=vit, decoder="mask_transformer",
                                    decoder_config=MaskTransformerConfig(n_layers=1, heads=1), num_classes=3))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # q and k far from zero: the weights differ across patches
    return model.train()  # training mode on purpose: the maps are taken in eval mode all the same


def literal_attention(model, x: torch.Tensor, layer: int, row: int, col: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) written out from the weights, tokens built by hand: (heads, N)."""
    enc = model.encoder
    p, d_model, heads = 8, 24, 3
    grid = (math.ceil(x.shape[2] / p), math.ceil(x.shape[3] / p))
    padded = torch.nn.functional.pad(x, (0, grid[1] * p - x.shape[3], 0, grid[0] * p - x.shape[2]))
    patches = enc.patch_embed.proj(padded).flatten(2).transpose(1, 2)[0]
    tokens = torch.cat([enc.cls_token[0], enc.dist_token[0], patches]) + enc.position_embedding(grid)[0]
    for block in enc.blocks[:layer]:
        tokens = block.eval()(tokens[None])[0]
    h = enc.blocks[layer].norm1(tokens)
    w, b = enc.blocks[layer].attn.qkv.weight, enc.blocks[layer].attn.qkv.bias
    q, k = h @ w[:d_model].T + b[:d_model], h @ w[d_model:2 * d_model].T + b[d_model:2 * d_model]
    i = 2 + row * grid[1] + col
    d = d_model // heads
    out = []
    for head in range(heads):
        s = slice(head * d, (head + 1) * d)
        out.append(torch.softmax(q[i, s] @ k[:, s].T / math.sqrt(d), dim=0))
    return torch.stack(out)


@pytest.mark.parametrize(("layer", "patch"), [(0, (1, 2)), (1, (3, 0))])
def test_maps_are_the_literal_softmax(tiny, layer, patch):
    x = torch.randn(1, 3, 30, 25)  # padded to a 4x4 grid of 8-pixel patches
    with torch.no_grad():
        expected = literal_attention(tiny, x, layer, *patch)
    result = patch_attention(tiny, x, patch, layer)
    assert result.maps.shape == (3, 4, 4) and result.extra.shape == (3, 2)
    torch.testing.assert_close(result.extra, expected[:, :2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.maps.flatten(1), expected[:, 2:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.maps.sum((1, 2)) + result.extra.sum(1), torch.ones(3))
    assert result.maps.amax((1, 2)).min() > 1.5 / 18  # not uniform: the test would see a wrong query
    assert tiny.training  # the mode is restored


def test_out_of_range_and_wrong_models(tiny):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(TransegError, match=r"layer 2 is out of range: the encoder has blocks 0 … 1"):
        patch_attention(tiny, x, (0, 0), 2)
    with pytest.raises(TransegError, match=r"patch \(4, 0\) is outside the 4x4 patch grid"):
        patch_attention(tiny, x, (4, 0), 0)
    with pytest.raises(TransegError, match=r"patch \(0, -1\) is outside"):
        patch_attention(tiny, x, (0, -1), 0)
    with pytest.raises(TransegError, match="need a ViT encoder .* MixTransformer"):
        patch_attention(create_model("segformer-b0", num_classes=2), x, (0, 0), 0)


def test_figures_from_a_file(tiny, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    result, shown = attention_of_file(tiny, tmp_path / "in.png", (1, 2), 0, size=(32, 40))
    assert shown.shape == (32, 40, 3) and result.grid == (4, 5)
    written = write_outputs(result, shown, tmp_path / "out", source="in.png")
    assert [p.name for p in written] == ["head_00.png", "head_01.png", "head_02.png", "attention.png",
                                         "attention.json"]
    head = np.asarray(Image.open(tmp_path / "out" / "head_01.png"))
    assert head.shape == (32, 40, 3)
    assert tuple(head[8, 16]) == (255, 32, 32)  # the outline of patch (1, 2) starts at pixel (8, 16)
    grid = Image.open(tmp_path / "out" / "attention.png")
    assert grid.size == (2 * 40 + 4, 2 * 32 + 4)  # the image and 3 heads, 2 x 2
    summary = json.loads((tmp_path / "out" / "attention.json").read_text())
    assert summary["patch"] == [1, 2] and summary["layer"] == 0 and summary["grid"] == [4, 5]
    top = summary["heads"][0]
    assert top["max_patch_weight"] == pytest.approx(float(result.maps[0].max()), abs=1e-6)
    assert top["extra_tokens_weight"] == pytest.approx(float(result.extra[0].sum()), abs=1e-6)
