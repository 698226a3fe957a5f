"""SegDeformer's official checkpoints (the authors' mmseg 0.x SegDeformerHead3): key names, round
trips in both backbone forms, zoo names and errors."""

from __future__ import annotations

import pytest
import torch

import transeg
from tests.conftest import randomize_batchnorm
from tests.models.test_segdeformer import C, close
from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.decoders.segdeformer.config import SegDeformerConfig
from transeg.models.encoders.mit import MiTConfig
from transeg.models.factory import build_model
from transeg.weights import segdeformer as weights

# --------------------------------------------------------------------------- official checkpoints
CONV_BN = ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked")
OFFICIAL_HEAD_KEYS = {  # SegDeformerHead3's state dict, written out from the official module tree
    *(f"decode_head.convs.{i}.{p}" for i in range(4) for p in CONV_BN),
    *(f"decode_head.fusion_conv.{p}" for p in CONV_BN),
    "decode_head.class_token.cls_token", "decode_head.class_token.prop_token",
    *(f"decode_head.class_token.{m}.{p}" for m in ("q", "k") for p in ("weight", "bias")),
    *(f"decode_head.trans.{a}.{proj}_project.{p}" for a in ("attn", "cross_attn")
      for proj in ("query", "key", "value", "out") for p in CONV_BN),
    "decode_head.conv_seg.weight", "decode_head.conv_seg.bias",
}


@pytest.fixture(scope="module")
def released_b0():
    torch.manual_seed(0)
    config = ModelConfig(encoder="mit", encoder_config=MiTConfig(), decoder="segdeformer",
                         decoder_config=SegDeformerConfig(mode="released", channels=C), num_classes=3)
    model = build_model(config)
    randomize_batchnorm(model)
    return model


def test_official_key_names(released_b0):
    state = released_b0.state_dict()
    official = weights.transeg_to_official(state)
    assert {k for k in official if k.startswith("decode_head.")} == OFFICIAL_HEAD_KEYS
    assert official["decode_head.class_token.cls_token"].shape == (1, 3, C)
    # MMSegmentation MiT (what mit2mmseg.py writes and the released configs load)
    q, kv = state["encoder.stages.0.blocks.0.attn.q.weight"], state["encoder.stages.0.blocks.0.attn.kv.weight"]
    assert torch.equal(official["backbone.layers.0.1.0.attn.attn.in_proj_weight"], torch.cat([q, kv]))
    expected_shapes = {
        "backbone.layers.0.0.projection.weight": (32, 3, 7, 7),
        "backbone.layers.1.0.norm.bias": (64,),
        "backbone.layers.0.1.0.attn.attn.in_proj_bias": (96,),
        "backbone.layers.0.1.0.attn.attn.out_proj.weight": (32, 32),
        "backbone.layers.0.1.0.attn.sr.weight": (32, 32, 8, 8),
        "backbone.layers.0.1.0.attn.norm.weight": (32,),
        "backbone.layers.0.1.1.norm1.weight": (32,),
        "backbone.layers.0.1.0.ffn.layers.0.weight": (128, 32, 1, 1),
        "backbone.layers.0.1.0.ffn.layers.1.weight": (128, 1, 3, 3),
        "backbone.layers.0.1.0.ffn.layers.4.weight": (32, 128, 1, 1),
        "backbone.layers.3.1.1.norm2.bias": (256,),
        "backbone.layers.3.2.weight": (256,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(official[key].shape) == shape, key
    assert not any("attn.sr" in k for k in official if k.startswith("backbone.layers.3."))  # sr ratio 1
    legacy = weights.transeg_to_official(state, backbone="official")
    for key in ("backbone.patch_embed1.proj.weight", "backbone.block1.0.attn.q.weight",
                "backbone.block1.0.attn.kv.bias", "backbone.block4.1.mlp.dwconv.dwconv.weight", "backbone.norm4.bias"):
        assert key in legacy, key


@pytest.mark.parametrize("backbone", ["mmseg", "official"])
def test_official_checkpoint_round_trip(released_b0, tmp_path, backbone):
    state = released_b0.state_dict()
    official = weights.transeg_to_official(state, backbone=backbone)
    assert weights.official_to_transeg(official).keys() == state.keys()
    path = tmp_path / "segdeformer.pth"
    torch.save({"meta": {"iter": 160000}, "state_dict": official}, path)
    loaded = transeg.load_model(path)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
    assert loaded.config.decoder_config == released_b0.config.decoder_config
    eps = loaded.config.encoder_config.embed_norm_eps
    assert eps == (1e-6 if backbone == "mmseg" else 1e-5)  # MMSegmentation's MiT: 1e-6 everywhere
    if backbone == "official":  # same weights, same eps: the same function
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert close(loaded(x), released_b0.eval()(x))


def test_zoo_name_of_an_official_checkpoint(tmp_path):
    model = transeg.create_model("segdeformer-mit-b1-released")
    official = weights.transeg_to_official(model.state_dict())
    config = weights.segdeformer_model_config(official, weights.official_to_transeg(official), "x")
    assert config.name == "segdeformer-mit-b1-released" and config.num_classes == 150


def test_unknown_official_key_is_named():
    with pytest.raises(TransegError, match="decode_head.trans.mlp"):
        weights.official_to_transeg({"decode_head.trans.mlp.weight": torch.zeros(1),
                                     "decode_head.class_token.cls_token": torch.zeros(1)})
