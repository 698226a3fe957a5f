"""Segmenter: the ViT encoder against transformers, the decoders' math, padding, the zoo's sizes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import transeg
from transeg.analysis.complexity import count_macs, count_parameters
from transeg.inference.modes import whole_logits
from transeg.models.config import ModelConfig
from transeg.models.decoders.linear import LinearDecoderConfig
from transeg.models.decoders.mask_transformer import MaskTransformerConfig
from transeg.models.encoders.vit import ViTConfig
from transeg.models.factory import build_model
from transeg.models.zoo import model_config
from transeg.weights.load import load_encoder_weights


def tiny_vit(**changes) -> ViTConfig:
    base = ViTConfig(patch_size=16, embed_dim=64, depth=2, heads=2, image_size=64, drop_path_rate=0.1)
    return dataclasses.replace(base, **changes)


def tiny_segmenter(decoder: str = "mask_transformer", num_classes: int = 5, seed: int = 0, **vit) -> transeg.Segmentor:
    decoder_config = LinearDecoderConfig() if decoder == "linear" else MaskTransformerConfig(heads=2)
    config = ModelConfig(encoder="vit", encoder_config=tiny_vit(**vit), decoder=decoder,
                         decoder_config=decoder_config, num_classes=num_classes, name="tiny")
    torch.manual_seed(seed)
    model = build_model(config)
    randomize(model, seed)
    return model


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values for every parameter (LayerNorms included), so that no term hides."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.5 if "norm" in name and name.endswith("weight") else 0.2
            offset = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(offset + scale * torch.randn(p.shape, generator=gen))


# --------------------------------------------------------------------------- parity with transformers
def _hf_vit(tmp_path, cls_name: str = "ViTModel", seed: int = 1, **config):
    transformers = pytest.importorskip("transformers")
    config_cls = transformers.DeiTConfig if cls_name.startswith("DeiT") else transformers.ViTConfig
    hf_config = config_cls(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                           image_size=64, patch_size=16, **config)
    torch.manual_seed(seed)
    hf = getattr(transformers, cls_name)(hf_config).eval()
    randomize(hf, seed)
    hf.save_pretrained(tmp_path)
    return hf


def _hf_patch_features(hidden: torch.Tensor, extra: int, grid: tuple[int, int]) -> torch.Tensor:
    tokens = hidden[:, extra:]
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


def test_encoder_matches_transformers_vit(tmp_path):
    """``last_hidden_state`` of ViTModel is post-LayerNorm: with its eps (1e-12) ours is the same."""
    hf = _hf_vit(tmp_path)
    model = tiny_segmenter(norm_eps=1e-12)
    load_encoder_weights(model, tmp_path)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = _hf_patch_features(hf(pixel_values=x).last_hidden_state, 1, (4, 4))
        got = model.encoder(x)[-1]
    assert got.shape == (2, 64, 4, 4)
    assert (got - expected).abs().max().item() < 1e-4


def test_encoder_matches_transformers_at_other_sizes_with_bicubic(tmp_path):
    """transformers resizes position embeddings bicubically (align_corners=False); so does a ViT
    configured with ``pos_interpolation='bicubic'`` (MMSegmentation's choice)."""
    hf = _hf_vit(tmp_path, seed=2)
    model = tiny_segmenter(norm_eps=1e-12, pos_interpolation="bicubic")
    load_encoder_weights(model, tmp_path)
    x = torch.randn(1, 3, 96, 128)
    with torch.inference_mode():
        expected = hf(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        got = model.encoder(x)[-1]
    assert (got - _hf_patch_features(expected, 1, (6, 8))).abs().max().item() < 1e-4


def test_bilinear_position_embedding_resize():
    """The official Segmenter's resize: the grid part bilinear (align_corners=False), the class
    token's entry kept."""
    encoder = tiny_segmenter().encoder.eval()
    pos = encoder.pos_embed.detach()
    grid = pos[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    expected_grid = F.interpolate(grid, size=(6, 9), mode="bilinear", align_corners=False)
    expected = torch.cat([pos[:, :1], expected_grid.flatten(2).transpose(1, 2)], dim=1)
    with torch.no_grad():
        assert torch.equal(encoder.position_embedding((6, 9)), expected)
        assert encoder.position_embedding((4, 4)) is encoder.pos_embed


def test_encoder_matches_transformers_deit(tmp_path):
    """DeiT: class and distillation tokens both get position embeddings and are both dropped."""
    hf = _hf_vit(tmp_path, "DeiTModel", seed=3)
    model = tiny_segmenter(norm_eps=1e-12, distilled=True)
    assert model.encoder.pos_embed.shape == (1, 2 + 16, 64)
    load_encoder_weights(model, tmp_path)
    assert torch.equal(model.encoder.dist_token, hf.embeddings.distillation_token)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = _hf_patch_features(hf(pixel_values=x).last_hidden_state, 2, (4, 4))
        assert (model.encoder(x)[-1] - expected).abs().max().item() < 1e-4


def test_transformers_5x_in_memory_names_load(tmp_path):
    from safetensors.torch import save_file

    hf = _hf_vit(tmp_path, "ViTForImageClassification", seed=4, num_labels=7)
    model = tiny_segmenter(norm_eps=1e-12)
    load_encoder_weights(model, tmp_path)  # 4.x names, as save_pretrained writes them
    saved = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, tmp_path / "model.safetensors")
    other = tiny_segmenter(norm_eps=1e-12, seed=9)
    load_encoder_weights(other, tmp_path)
    for key, value in other.encoder.state_dict().items():
        assert torch.equal(value, saved[key]), key


# --------------------------------------------------------------------------- encoder behaviour
def test_out_indices_and_final_norm():
    model = tiny_segmenter(depth=3, out_indices=(0, -1))
    enc = model.encoder
    assert enc.out_channels == (64, 64) and enc.strides == (16, 16)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        first, last = enc(x)
        tokens = torch.cat([enc.extra_tokens(1), enc.patch_embed(x).flatten(2).transpose(1, 2)], 1)
        tokens = tokens + enc.position_embedding((4, 3))
        after0 = enc.blocks[0](tokens)
        final = enc.norm(enc.blocks[2](enc.blocks[1](after0)))
    assert torch.allclose(first, after0[:, 1:].transpose(1, 2).reshape(1, 64, 4, 3), atol=1e-6)
    assert torch.allclose(last, final[:, 1:].transpose(1, 2).reshape(1, 64, 4, 3), atol=1e-6)


@pytest.mark.parametrize("bad", [(0,), (-1, 0), (5,)])
def test_bad_out_indices_name_the_key(bad):
    with pytest.raises(transeg.TransegError, match="out_indices"):
        tiny_vit(depth=3, out_indices=bad)


def test_position_embedding_cache_follows_the_weights():
    enc = tiny_segmenter().encoder.eval()
    with torch.no_grad():
        first = enc.position_embedding((5, 7))
        assert enc.position_embedding((5, 7)) is first  # cached
        state = enc.state_dict()
        state["pos_embed"] = state["pos_embed"] + 1.0
        enc.load_state_dict(state)
        assert torch.allclose(enc.position_embedding((5, 7)), first + 1.0, atol=1e-6)
        enc.pos_embed.mul_(2.0)  # any in-place update bumps the version counter
        assert torch.allclose(enc.position_embedding((5, 7)), 2 * first + 2.0, atol=1e-5)
    enc.train()
    x = torch.randn(1, 3, 80, 112)
    enc(x)[-1].sum().backward()
    assert enc.pos_embed.grad is not None and enc.pos_embed.grad.abs().sum() > 0
    assert len(enc._pos_cache) <= 2


def test_odd_sizes_stay_aligned():
    """97x131 is zero-padded to 112x144; the 7x9 patch logits are upsampled to the padded size and
    cropped (official Segmenter), so the output is at the input's size and aligned with it."""
    model = tiny_segmenter(decoder="linear").eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.inference_mode():
        got = whole_logits(model, x)
        padded = F.pad(x, (0, 144 - 131, 0, 112 - 97))
        grid_logits = model.decoder(model.encoder(padded))
        assert grid_logits.shape[-2:] == (7, 9)
        expected = F.interpolate(grid_logits, size=(112, 144), mode="bilinear", align_corners=False)[..., :97, :131]
        naive = F.interpolate(grid_logits, size=(97, 131), mode="bilinear", align_corners=False)
        assert model(x).shape[-2:] == (97, 131)
        unpadded = F.interpolate(grid_logits, size=(112, 144), mode="bilinear", align_corners=False)
        assert torch.equal(model(padded), unpadded)  # multiples of the patch: just the upsampling
    assert torch.equal(got, expected)
    assert (naive - expected).abs().max() > 0.1  # resizing the padded grid would shift the map


def test_export_with_dynamic_sizes():
    """No shape test in the graph: one export serves every size, padded or not."""
    model = tiny_segmenter().eval()
    dims = {0: torch.export.Dim("batch", min=1, max=8), 2: torch.export.Dim("height", min=32, max=1024),
            3: torch.export.Dim("width", min=32, max=1024)}
    exported = torch.export.export(model, (torch.randn(2, 3, 96, 128),), dynamic_shapes={"x": dims})
    for shape in [(1, 3, 64, 64), (3, 3, 97, 131), (1, 3, 200, 75)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            assert (exported.module()(x) - model(x)).abs().max() < 1e-5


def test_training_output_is_cropped_too():
    model = tiny_segmenter().train()
    out = model.forward_train(torch.randn(2, 3, 50, 70))
    assert out.logits.shape == (2, 5, 50, 70)
    out.logits.mean().backward()


# --------------------------------------------------------------------------- decoders
def _attention_reference(block, x: torch.Tensor, eps: float) -> torch.Tensor:
    """A pre-norm block from its parameters: explicit softmax attention, GELU MLP."""
    b, n, c = x.shape
    heads = block.attn.heads
    y = F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias, eps)
    q, k, v = (y @ block.attn.qkv.weight.T + block.attn.qkv.bias).split(c, dim=-1)
    q, k, v = (t.reshape(b, n, heads, c // heads).transpose(1, 2) for t in (q, k, v))
    attn = torch.softmax(q @ k.transpose(-2, -1) / (c // heads) ** 0.5, dim=-1)
    y = (attn @ v).transpose(1, 2).reshape(b, n, c) @ block.attn.proj.weight.T + block.attn.proj.bias
    x = x + y
    y = F.layer_norm(x, (c,), block.norm2.weight, block.norm2.bias, eps)
    y = F.gelu(y @ block.mlp.fc1.weight.T + block.mlp.fc1.bias) @ block.mlp.fc2.weight.T + block.mlp.fc2.bias
    return x + y


def test_mask_transformer_math():
    model = tiny_segmenter(num_classes=6).eval()
    dec = model.decoder
    feats = torch.randn(2, 64, 3, 4)
    with torch.no_grad():
        got = dec([feats])
        eps = dec.config.norm_eps
        x = feats.flatten(2).transpose(1, 2) @ dec.proj_dec.weight.T + dec.proj_dec.bias
        x = torch.cat([x, dec.cls_emb.expand(2, -1, -1)], dim=1)  # classes after the 12 patches
        for block in dec.blocks:
            x = _attention_reference(block, x, eps)
        x = F.layer_norm(x, (64,), dec.decoder_norm.weight, dec.decoder_norm.bias, eps)
        patches, classes = x[:, :12] @ dec.proj_patch, x[:, 12:] @ dec.proj_classes
        patches = patches / patches.norm(dim=-1, keepdim=True)
        classes = classes / classes.norm(dim=-1, keepdim=True)
        cosines = patches @ classes.transpose(1, 2)  # (B, 12, 6)
        assert cosines.abs().max() <= 1 + 1e-6
        masks = F.layer_norm(cosines, (6,), dec.mask_norm.weight, dec.mask_norm.bias, eps)
        expected = masks.transpose(1, 2).reshape(2, 6, 3, 4)
    assert got.shape == (2, 6, 3, 4)
    assert (got - expected).abs().max().item() < 1e-5


def test_mask_transformer_defaults_follow_the_paper():
    model = build_model(model_config("segmenter-s16-mask", num_classes=150))
    dec = model.decoder
    assert len(dec.blocks) == 2 and dec.blocks[0].attn.heads == 384 // 64
    assert dec.blocks[0].mlp.fc1.out_features == 4 * 384
    assert dec.proj_patch.shape == (384, 384) and isinstance(dec.proj_patch, torch.nn.Parameter)
    assert dec.mask_norm.normalized_shape == (150,)
    assert dec.cls_emb.shape == (1, 150, 384) and dec.cls_emb.std() < 0.03
    assert 0.8 < dec.proj_patch.std().item() * 384**0.5 < 1.2  # d**-0.5 * randn
    with torch.no_grad():  # LayerNorm over the classes: zero mean, unit variance per patch at init
        masks = dec([torch.randn(1, 384, 2, 3)])
    assert masks.mean(dim=1).abs().max() < 1e-5


def test_linear_decoder_is_a_per_patch_linear():
    model = tiny_segmenter(decoder="linear").eval()
    feats = torch.randn(2, 64, 3, 5)
    with torch.no_grad():
        expected = torch.einsum("bchw,kc->bkhw", feats, model.decoder.head.weight)
        expected = expected + model.decoder.head.bias[:, None, None]
        assert torch.allclose(model.decoder([feats]), expected, atol=1e-5)


# --------------------------------------------------------------------------- zoo
# Segmenter Table 1: encoder parameters (M).
TABLE_1 = {"t": 6, "s": 22, "b": 86, "l": 307}


@pytest.mark.parametrize("size", list(TABLE_1))
def test_encoder_sizes_match_table_1(size):
    with torch.device("meta"):
        model = build_model(model_config(f"segmenter-{size}16-mask", num_classes=150))
    encoder = count_parameters(model)["encoder"] / 1e6
    if size == "l":  # 304.2M: timm's ViT-L/16 without its head; the paper rounds to 307M
        assert encoder == pytest.approx(TABLE_1[size], rel=0.01)
    else:
        assert round(encoder) == TABLE_1[size]


def test_zoo_variants():
    names = [n for n in transeg.list_models() if n.startswith("segmenter-")]
    for v in ("t16", "s16", "b16", "l16", "b8", "b32"):
        assert {f"segmenter-{v}-linear", f"segmenter-{v}-mask"} <= set(names)
    vit, deit = model_config("segmenter-b16-mask"), model_config("segmenter-b16-mask-deit")
    assert vit.mean == vit.std == (127.5,) * 3
    assert deit.encoder_config.distilled and deit.mean == (123.675, 116.28, 103.53)
    assert model_config("segmenter-b8-linear").encoder_config.patch_size == 8
    assert model_config("segmenter-l16-mask").encoder_config.image_size == 512


def test_macs_counter_runs():
    model = transeg.create_model("segmenter-t16-mask", num_classes=150)
    macs = count_macs(model, (512, 512))
    # ViT-T/16 at 512: 12 blocks x (12 N d^2 + 2 N^2 d), N = 1025, d = 192
    encoder = 12 * (12 * 1025 * 192**2 + 2 * 1025**2 * 192) + 1024 * 192 * 768
    assert macs > encoder and macs / 1e9 == pytest.approx(encoder / 1e9, rel=0.25)


def test_cli_info_works_for_segmenter():
    from click.testing import CliRunner

    from transeg.cli import cli

    result = CliRunner().invoke(cli, ["info", "segmenter-t16-mask", "--num-classes", "150",
                                      "--size", "512", "512"])
    assert result.exit_code == 0, result.output
    assert "segmenter-t16-mask" in result.output and "GMACs" in result.output


def test_config_round_trip(tmp_path):
    model = tiny_segmenter(image_size=(64, 48), distilled=True, out_indices=(0, 1))
    path = transeg.save_model(model, tmp_path / "seg.safetensors")
    loaded = transeg.load_model(path)
    assert loaded.config == model.config
    x = torch.randn(1, 3, 70, 50)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model.eval()(x))
