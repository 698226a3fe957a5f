"""ViT / Segmenter weight formats: timm, official Segmenter, MMSegmentation; exact round trips and
errors that name the keys at fault. Every checkpoint is built locally from a random model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml
from safetensors.torch import save_file

import transeg
from tests.models.test_segmenter import tiny_segmenter as _tiny
from transeg.models.factory import build_model
from transeg.models.layers.pos_embed import resize_pos_embed
from transeg.weights.load import load_encoder_weights
from transeg.weights.vit import hf_vit_to_transeg, mmseg_segmenter_to_transeg, timm_to_transeg


def tiny_segmenter(decoder: str = "mask_transformer", **changes) -> transeg.Segmentor:
    """Width 128 with 2 heads: head counts are not in the weights, and checkpoints imply width // 64."""
    return _tiny(decoder, **{"embed_dim": 128, **changes})


def timm_state(model: transeg.Segmentor) -> dict[str, torch.Tensor]:
    """A timm ViT checkpoint of ``model``'s encoder, classification head included."""
    state = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    d = model.encoder.config.embed_dim
    state["head.weight"], state["head.bias"] = torch.randn(1000, d), torch.randn(1000)
    if model.encoder.config.distilled:
        state["head_dist.weight"], state["head_dist.bias"] = torch.randn(1000, d), torch.randn(1000)
    return state


def official_checkpoint(model: transeg.Segmentor, directory, variant: dict | None = None):
    """``checkpoint.pth`` as the official train.py writes it, and ``variant.yml`` beside it."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    d = model.encoder.config.embed_dim
    state["encoder.head.weight"], state["encoder.head.bias"] = torch.randn(1000, d), torch.randn(1000)
    path = directory / "checkpoint.pth"
    torch.save({"model": state, "n_cls": model.num_classes, "epoch": 3,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}}, path)
    if variant is not None:
        (directory / "variant.yml").write_text(yaml.dump({"net_kwargs": variant, "world_batch_size": 8}))
    return path


def _official_variant(model: transeg.Segmentor, **changes) -> dict:
    enc = model.encoder.config
    decoder = ({"name": "linear", "n_cls": model.num_classes} if model.config.decoder == "linear" else
               {"name": "mask_transformer", "n_layers": 2, "dropout": 0.1, "drop_path_rate": 0.0,
                "n_cls": model.num_classes})
    variant = {"image_size": (enc.image_size, enc.image_size), "patch_size": enc.patch_size,
               "d_model": enc.embed_dim, "n_heads": enc.heads, "n_layers": enc.depth, "normalization": "vit",
               "distilled": enc.distilled, "backbone": "vit_tiny_patch16_384", "dropout": 0.0,
               "drop_path_rate": 0.1, "decoder": decoder, "n_cls": model.num_classes}
    variant.update(changes)
    return variant


def mmseg_state(model: transeg.Segmentor) -> dict[str, torch.Tensor]:
    """An MMSegmentation Segmenter ``state_dict`` of ``model`` (mmseg's names, written out here
    independently of transeg's converter)."""
    def layer(prefix: str, ours: str, state: dict, out: dict) -> None:
        i = 0
        while f"{ours}.{i}.norm1.weight" in state:
            for p in ("weight", "bias"):
                out[f"{prefix}.{i}.ln1.{p}"] = state[f"{ours}.{i}.norm1.{p}"]
                out[f"{prefix}.{i}.attn.attn.in_proj_{p}"] = state[f"{ours}.{i}.attn.qkv.{p}"]
                out[f"{prefix}.{i}.attn.attn.out_proj.{p}"] = state[f"{ours}.{i}.attn.proj.{p}"]
                out[f"{prefix}.{i}.ln2.{p}"] = state[f"{ours}.{i}.norm2.{p}"]
                out[f"{prefix}.{i}.ffn.layers.0.0.{p}"] = state[f"{ours}.{i}.mlp.fc1.{p}"]
                out[f"{prefix}.{i}.ffn.layers.1.{p}"] = state[f"{ours}.{i}.mlp.fc2.{p}"]
            i += 1

    s = {k: v.clone() for k, v in model.state_dict().items()}
    out = {"backbone.cls_token": s["encoder.cls_token"], "backbone.pos_embed": s["encoder.pos_embed"]}
    for p in ("weight", "bias"):
        out[f"backbone.patch_embed.projection.{p}"] = s[f"encoder.patch_embed.proj.{p}"]
        out[f"backbone.ln1.{p}"] = s[f"encoder.norm.{p}"]
    layer("backbone.layers", "encoder.blocks", s, out)
    k, d = model.num_classes, model.encoder.config.embed_dim
    if model.config.decoder == "linear":
        out["decode_head.conv_seg.weight"] = s["decoder.head.weight"][:, :, None, None]
        out["decode_head.conv_seg.bias"] = s["decoder.head.bias"]
        return out
    for p in ("weight", "bias"):
        out[f"decode_head.dec_proj.{p}"] = s[f"decoder.proj_dec.{p}"]
        out[f"decode_head.decoder_norm.{p}"] = s[f"decoder.decoder_norm.{p}"]
        out[f"decode_head.mask_norm.{p}"] = s[f"decoder.mask_norm.{p}"]
    out["decode_head.cls_emb"] = s["decoder.cls_emb"]
    out["decode_head.patch_proj.weight"] = s["decoder.proj_patch"].T.contiguous()  # Linear: x @ W.T
    out["decode_head.classes_proj.weight"] = s["decoder.proj_classes"].T.contiguous()
    out["decode_head.conv_seg.weight"], out["decode_head.conv_seg.bias"] = torch.randn(k, d, 1, 1), torch.randn(k)
    layer("decode_head.layers", "decoder.blocks", s, out)
    return out


def _same_logits(a: transeg.Segmentor, b: transeg.Segmentor, size=(64, 64)) -> None:
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        assert torch.equal(a.eval()(x), b.eval()(x))


# --------------------------------------------------------------------------- timm
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_backbone_initialises_encoder(tmp_path, suffix):
    source = tiny_segmenter(seed=1)
    path = tmp_path / f"vit_tiny{suffix}"
    state = timm_state(source)
    torch.save(state, path) if suffix == ".pth" else save_file(state, path)
    model = tiny_segmenter(seed=2)
    load_encoder_weights(model, path)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(value, model.encoder.state_dict()[key]), key
    x = torch.randn(1, 3, 64, 80)
    with torch.inference_mode():
        assert torch.equal(model.encoder(x)[-1], source.encoder(x)[-1])


def test_timm_position_embeddings_resized_to_the_model_grid(tmp_path):
    source = tiny_segmenter(seed=3)  # learned at 64 (4x4 grid), e.g. a 384 checkpoint
    torch.save(timm_state(source), tmp_path / "vit.pth")
    config = dataclasses.replace(source.config, encoder_config=dataclasses.replace(
        source.config.encoder_config, image_size=96))
    model = build_model(config)
    load_encoder_weights(model, tmp_path / "vit.pth")
    expected = resize_pos_embed(source.encoder.pos_embed.detach(), (4, 4), (6, 6), 1, "bilinear")
    assert torch.equal(model.encoder.pos_embed.detach(), expected)


def test_timm_deit_distilled(tmp_path):
    source = tiny_segmenter(distilled=True, seed=4)
    state = timm_state(source)
    torch.save({"model": state}, tmp_path / "deit.pth")  # DeiT releases wrap the weights in "model"
    model = tiny_segmenter(distilled=True, seed=5)
    load_encoder_weights(model, tmp_path / "deit.pth")
    assert torch.equal(model.encoder.dist_token, source.encoder.dist_token)
    with pytest.raises(transeg.TransegError, match="distillation token.*deit"):
        load_encoder_weights(tiny_segmenter(), tmp_path / "deit.pth")


def test_timm_unknown_key_is_named():
    state = timm_state(tiny_segmenter())
    state["blocks.0.ls1.gamma"] = torch.ones(64)
    with pytest.raises(transeg.TransegError, match=r"blocks\.0\.ls1\.gamma"):
        timm_to_transeg(state)


def test_encoder_of_other_depth_names_the_keys(tmp_path):
    torch.save(timm_state(tiny_segmenter(depth=3)), tmp_path / "deeper.pth")
    with pytest.raises(transeg.TransegError, match=r"deeper\.pth.*unexpected blocks\.2\."):
        load_encoder_weights(tiny_segmenter(), tmp_path / "deeper.pth")


def test_timm_backbone_is_not_a_model(tmp_path):
    torch.save(timm_state(tiny_segmenter()), tmp_path / "vit.pth")
    with pytest.raises(transeg.TransegError, match="encoder_weights"):
        transeg.load_model(tmp_path / "vit.pth")


# --------------------------------------------------------------------------- transformers
def test_transformers_heads_must_agree(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=256, image_size=64, patch_size=16)
    transformers.ViTModel(config).save_pretrained(tmp_path)
    with pytest.raises(transeg.TransegError, match="num_attention_heads 4"):
        load_encoder_weights(tiny_segmenter(), tmp_path)


def test_transformers_missing_value_is_named():
    state = {"encoder.layer.0.attention.attention.query.weight": torch.ones(2, 2),
             "encoder.layer.0.attention.attention.key.weight": torch.ones(2, 2)}
    with pytest.raises(transeg.TransegError, match=r"blocks\.0\.attn\.qkv\.weight lacks"):
        hf_vit_to_transeg(state)


# --------------------------------------------------------------------------- official Segmenter
@pytest.mark.parametrize("decoder", ["mask_transformer", "linear"])
def test_official_checkpoint_round_trip(tmp_path, decoder):
    source = tiny_segmenter(decoder, norm_eps=1e-5, seed=6)  # official LayerNorms: PyTorch's 1e-5
    path = official_checkpoint(source, tmp_path, _official_variant(source))
    assert "!!python/tuple" in (tmp_path / "variant.yml").read_text()  # as yaml.dump writes image_size
    loaded = transeg.load_model(path)
    assert loaded.config.encoder_config.norm_eps == 1e-5
    assert loaded.config.mean == loaded.config.std == (127.5,) * 3
    assert loaded.config.decoder == decoder and loaded.num_classes == 5
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    _same_logits(loaded, source)
    _same_logits(loaded, source, size=(75, 101))


def test_official_checkpoint_without_variant_is_inferred(tmp_path):
    source = tiny_segmenter(norm_eps=1e-5, distilled=True, seed=7)
    loaded = transeg.load_model(official_checkpoint(source, tmp_path))
    assert loaded.config.encoder_config.distilled
    assert loaded.config.mean == (123.675, 116.28, 103.53)  # DeiT: ImageNet normalisation
    assert loaded.config.encoder_config.heads == 2  # 128 // 64: heads are not in the weights
    _same_logits(loaded, source)


def test_official_zoo_shaped_checkpoint_gets_its_name(tmp_path):
    source = transeg.create_model("segmenter-t16-mask", num_classes=150)
    variant = _official_variant(source, image_size=(512, 512))
    loaded = transeg.load_model(official_checkpoint(source, tmp_path, variant))
    assert loaded.config.name == "segmenter-t16-mask"


def test_official_variant_disagreeing_with_weights_names_the_key(tmp_path):
    source = tiny_segmenter(norm_eps=1e-5)
    path = official_checkpoint(source, tmp_path, _official_variant(source, d_model=256))
    with pytest.raises(transeg.TransegError, match="variant.yml: d_model is 256 but the weights say 128"):
        transeg.load_model(path)
    bad_decoder = _official_variant(source, decoder={"name": "deeplab_dec"})
    official_checkpoint(source, tmp_path, bad_decoder)
    with pytest.raises(transeg.TransegError, match="deeplab_dec"):
        transeg.load_model(path)


def test_official_unknown_key_is_named(tmp_path):
    source = tiny_segmenter(norm_eps=1e-5)
    path = official_checkpoint(source, tmp_path)
    data = torch.load(path, weights_only=True)
    data["model"]["decoder.extra_proj.weight"] = torch.ones(3)
    torch.save(data, path)
    with pytest.raises(transeg.TransegError, match=r"decoder\.extra_proj\.weight"):
        transeg.load_model(path)


def test_official_checkpoint_as_encoder_weights(tmp_path):
    source = tiny_segmenter(norm_eps=1e-5, seed=8)
    path = official_checkpoint(source, tmp_path)
    model = tiny_segmenter("linear", num_classes=3, seed=9)
    load_encoder_weights(model, path)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(value, model.encoder.state_dict()[key]), key


# --------------------------------------------------------------------------- MMSegmentation
@pytest.mark.parametrize("decoder", ["mask_transformer", "linear"])
def test_mmseg_checkpoint_round_trip(tmp_path, decoder):
    source = tiny_segmenter(decoder, norm_eps=1e-6, pos_interpolation="bicubic", seed=10)
    path = tmp_path / "segmenter_vit-t_mask_8x1_512x512_160k_ade20k.pth"
    torch.save({"meta": {"CLASSES": list("abcde")}, "state_dict": mmseg_state(source)}, path)
    loaded = transeg.load_model(path)
    enc = loaded.config.encoder_config
    assert (enc.norm_eps, enc.pos_interpolation) == (1e-6, "bicubic")
    assert loaded.config.decoder == decoder and loaded.num_classes == 5
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    _same_logits(loaded, source)
    _same_logits(loaded, source, size=(80, 112))  # bicubic position embeddings, as mmseg


def test_mmseg_projections_are_transposed():
    source = tiny_segmenter(seed=11)
    converted = mmseg_segmenter_to_transeg(mmseg_state(source))
    assert torch.equal(converted["decoder.proj_patch"], source.decoder.proj_patch)
    assert not torch.equal(converted["decoder.proj_patch"], converted["decoder.proj_patch"].T)


def test_mmseg_backbone_as_encoder_weights(tmp_path):
    """MMSegmentation's ImageNet ViTs (vit2mmseg) carry mmseg names without ``backbone.``."""
    source = tiny_segmenter(seed=12)
    backbone = {k.removeprefix("backbone."): v for k, v in mmseg_state(source).items() if k.startswith("backbone.")}
    torch.save(backbone, tmp_path / "vit_tiny_p16_384.pth")
    model = tiny_segmenter(seed=13)
    load_encoder_weights(model, tmp_path / "vit_tiny_p16_384.pth")
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(value, model.encoder.state_dict()[key]), key


def test_mmseg_unknown_head_key_is_named(tmp_path):
    state = mmseg_state(tiny_segmenter())
    state["decode_head.layers.0.gamma"] = torch.ones(64)
    torch.save({"state_dict": state}, tmp_path / "m.pth")
    with pytest.raises(transeg.TransegError, match=r"layers\.0\.gamma"):
        transeg.load_model(tmp_path / "m.pth")


def test_non_square_position_grid_is_an_error(tmp_path):
    source = tiny_segmenter(image_size=(64, 48))
    state = mmseg_state(source)
    torch.save({"state_dict": state}, tmp_path / "m.pth")
    with pytest.raises(transeg.TransegError, match="square grid"):
        transeg.load_model(tmp_path / "m.pth")

