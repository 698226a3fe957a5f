"""The ViT's position-embedding grid set per model (``create_model(..., image_size=…)``), and its
encoder dropout (the official Segmenter's ``--dropout``, Table 2 of the paper)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import transeg
from tests.models.test_segmenter import tiny_segmenter
from transeg.models.encoders import vit
from transeg.models.zoo import model_config


def test_model_built_at_480_has_a_30x30_table(monkeypatch):
    model = transeg.create_model("segmenter-t16-mask", num_classes=60, image_size=480)
    assert model.config.encoder_config.image_size == 480
    assert model.encoder.grid == (30, 30)
    assert model.encoder.pos_embed.shape == (1, 1 + 30 * 30, 192)

    def no_resize(*args, **kwargs):
        raise AssertionError("position embeddings resized at a forward pass")

    monkeypatch.setattr(vit, "resize_pos_embed", no_resize)
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 480, 480)).shape == (1, 60, 480, 480)


def test_image_size_forms():
    assert model_config("segmenter-b16-mask", image_size=(768, 768)).encoder_config.image_size == 768
    assert model_config("segmenter-b16-mask", image_size=(480, 640)).encoder_config.grid == (30, 40)
    assert model_config("segmenter-b16-mask").encoder_config.image_size == 512  # the zoo is unchanged


@pytest.mark.parametrize(("name", "size", "expected"), [
    ("segmenter-b16-mask", 500, "image_size 500 is not a multiple of patch_size 16"),
    ("segmenter-b16-mask", 0, "image_size must be positive, got 0"),
    ("segformer-b0", 512, "image_size 512: the 'mit' encoder of segformer-b0 has no position-embedding size"),
])
def test_bad_image_size_is_named(name, size, expected):
    with pytest.raises(transeg.TransegError, match=expected):
        model_config(name, image_size=size)


def test_dropout_is_wired_as_the_official_encoder():
    model = tiny_segmenter(dropout=0.2, drop_path_rate=0.0)
    encoder = model.encoder
    dropouts = [m for m in encoder.modules() if isinstance(m, nn.Dropout)]
    # tokens after the position embeddings, then per block: attention output, MLP (one module, twice)
    assert len(dropouts) == 1 + 2 * len(encoder.blocks) and all(m.p == 0.2 for m in dropouts)
    assert all(block.attn.dropout == 0.2 for block in encoder.blocks)  # on the attention weights
    plain = tiny_segmenter(drop_path_rate=0.0)  # same seed: same weights
    assert list(plain.state_dict()) == list(model.state_dict())  # dropout adds no key
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        evaluated = model.encoder(x)[-1]
        assert torch.equal(evaluated, plain.encoder(x)[-1])  # inactive in eval mode
        assert torch.equal(plain.encoder.train()(x)[-1], evaluated)  # dropout 0: nothing random
        assert not torch.allclose(model.encoder.train()(x)[-1], evaluated)


@pytest.mark.parametrize("key", ["dropout", "drop_path_rate"])
def test_rates_out_of_range_are_named(key):
    with pytest.raises(transeg.TransegError, match=f"{key} 1.0 is not in"):
        dataclasses.replace(model_config("segmenter-t16-mask").encoder_config, **{key: 1.0})
