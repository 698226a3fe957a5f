"""ImageNet ViT weights read at the training grid: a transformers ViT-S/16-384 given as
``encoder_weights`` to a Segmenter built with ``image_size`` (the official Segmenter's
``image_size = (crop, crop)``, the pretrained table resized once, at load)."""

from __future__ import annotations

import pytest
import torch

import transeg
from transeg.models.layers.pos_embed import resize_pos_embed

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def vit_s16_384(tmp_path_factory):
    """A random transformers ``ViTModel`` shaped as ViT-S/16 at 384 (the AugReg checkpoint Segmenter
    starts from), saved with ``save_pretrained``; LayerNorm eps 1e-6 as timm's, the zoo's."""
    config = transformers.ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                    intermediate_size=1536, image_size=384, patch_size=16, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    hf = transformers.ViTModel(config, add_pooling_layer=False).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial LayerNorms, so that no norm term hides
        for name, p in hf.named_parameters():
            if "layernorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=gen))
    directory = tmp_path_factory.mktemp("vit_s16_384")
    hf.save_pretrained(directory)
    return hf, directory


def test_features_match_transformers_at_384(vit_s16_384):
    hf, directory = vit_s16_384
    model = transeg.create_model("segmenter-s16-mask", image_size=384, encoder_weights=directory)
    assert model.encoder.grid == (24, 24)
    assert torch.equal(model.encoder.pos_embed, hf.embeddings.position_embeddings)  # read as it is
    x = torch.randn(1, 3, 384, 384)
    with torch.inference_mode():
        tokens = hf(pixel_values=x).last_hidden_state[:, 1:]  # post-LayerNorm; the class token dropped
        expected = tokens.transpose(1, 2).reshape(1, 384, 24, 24)
        got = model.encoder(x)[-1]
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4


def test_table_resized_once_to_the_training_grid(vit_s16_384):
    """At image_size 480 the 24x24 table becomes 30x30 at load (bilinear, the class token's entry
    kept, as the official code); a 480 input then uses it without a resize."""
    hf, directory = vit_s16_384
    model = transeg.create_model("segmenter-s16-mask", image_size=480, encoder_weights=directory)
    expected = resize_pos_embed(hf.embeddings.position_embeddings.detach(), (24, 24), (30, 30), 1, "bilinear")
    assert model.encoder.pos_embed.shape == (1, 1 + 30 * 30, 384)
    assert torch.allclose(model.encoder.pos_embed, expected, atol=1e-7)
    with torch.no_grad():
        assert model.encoder.position_embedding((30, 30)) is model.encoder.pos_embed
