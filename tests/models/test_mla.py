"""SETR's MLA decoder: MMSegmentation's forward written out, any encoder and size, gradients, the
top-down sum, and the decoder sizes of SegFormer's Table 3."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import transeg
from tests.conftest import randomize_batchnorm
from tests.models.test_segmenter import randomize
from transeg.analysis.complexity import count_macs, count_parameters
from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.decoders.mla import MLAConfig, MLADecoder
from transeg.models.decoders.mlp import MLPDecoder, MLPDecoderConfig
from transeg.models.decoders.uper import UperNetConfig, UperNetDecoder
from transeg.models.encoders.mit import MiTConfig
from transeg.models.encoders.swin import SwinConfig
from transeg.models.encoders.vit import ViTConfig
from transeg.models.factory import build_model, model_config_from_json
from transeg.models.zoo import VIT_MEAN, model_config, with_decoder_width

TINY = {
    "mit": MiTConfig(widths=(16, 32, 40, 64), depths=(1, 1, 1, 1), heads=(1, 2, 5, 8)),
    "swin": SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), heads=(1, 2, 4, 8)),
    "vit": ViTConfig(patch_size=16, embed_dim=32, depth=4, heads=2, image_size=64, out_indices=(0, 1, 2, 3)),
}
SMALL = MLAConfig(channels=16, head_channels=8)


def mla_model(encoder: str, num_classes: int = 5, seed: int = 0, **decoder) -> transeg.Segmentor:
    config = ModelConfig(encoder=encoder, encoder_config=TINY[encoder], decoder="mla",
                         decoder_config=dataclasses.replace(SMALL, **decoder), num_classes=num_classes)
    torch.manual_seed(seed)
    model = build_model(config)
    randomize(model, seed)
    with torch.no_grad():
        randomize_batchnorm(model.decoder, seed)
    return model.eval()


def small_decoder(in_channels: Sequence[int], seed: int = 0, **decoder) -> MLADecoder:
    torch.manual_seed(seed)
    dec = MLADecoder(in_channels, 5, dataclasses.replace(SMALL, **decoder))
    randomize(dec, seed)
    with torch.no_grad():
        randomize_batchnorm(dec, seed)
    return dec.eval()


# --------------------------------------------------------------------------- MMSegmentation's forward
def _conv_module(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """mmcv's ConvModule from its parameters: conv, then (when present) eval BatchNorm and ReLU."""
    y = F.conv2d(x, m.conv.weight, m.conv.bias, padding=m.conv.padding)
    if not hasattr(m, "bn"):
        return y
    y = F.batch_norm(y, m.bn.running_mean, m.bn.running_var, m.bn.weight, m.bn.bias, False, 0.0, m.bn.eps)
    return F.relu(y)


def reference_setr_mla(dec: MLADecoder, feats: list[torch.Tensor]) -> torch.Tensor:
    """``MLANeck`` + ``SETRMLAHead`` (eval) on equal-size maps, in MMSegmentation's own order: its
    neck returns the 3x3 outputs deepest first and its head concatenates them in that order."""
    normed = [F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], n.weight, n.bias, n.eps).permute(0, 3, 1, 2)
              for x, n in zip(feats, dec.input_norms, strict=True)]
    projected = [_conv_module(m, x) for m, x in zip(dec.lateral_convs, normed, strict=True)][::-1]
    mids = [projected[0]]
    for p in projected[1:]:
        mids.append(mids[-1] + p)
    outs = [_conv_module(dec.aug_convs[3 - j], m) for j, m in enumerate(mids)]  # deepest first
    ups = []
    for j, x in enumerate(outs):
        head = dec.head_convs[3 - j]
        x = _conv_module(head[1], _conv_module(head[0], x))
        ups.append(F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False))
    return F.conv2d(torch.cat(ups, 1), dec.classifier.weight, dec.classifier.bias)


@pytest.mark.parametrize("fused", [True, False])
def test_vit_inputs_match_mmsegmentation(fused):
    dec = small_decoder([12] * 4)
    dec.fused_projection = fused
    feats = [torch.randn(2, 12, 5, 7) for _ in range(4)]
    with torch.inference_mode():
        got, expected = dec(feats), reference_setr_mla(dec, feats)
    assert got.shape == (2, 5, 20, 28)
    assert (got - expected).abs().max().item() < 1e-4


def test_classifier_before_upsampling_is_the_same_function():
    """Classifying the concatenated maps, then upsampling the logits (what transeg runs) equals the
    literal upsample-concatenate-classify, at odd hierarchical sizes too."""
    dec = small_decoder([8, 16, 24, 32], seed=2)
    feats = [torch.randn(2, c, h, w) for c, (h, w) in zip([8, 16, 24, 32], [(17, 24), (9, 12), (5, 6), (3, 3)],
                                                          strict=True)]
    with torch.inference_mode():
        fused = dec(feats)
        dec.fused_projection = False
        literal = dec(feats)
    assert fused.shape == literal.shape == (2, 5, 68, 96)
    assert (fused - literal).abs().max().item() < 1e-4


def test_neck_without_norms_and_3x3_classifier():
    dec = small_decoder([12] * 4, neck_norm=False, input_norm=False, classifier_kernel=3)
    assert dec.input_norms is None and not hasattr(dec.lateral_convs[0], "bn")
    assert dec.lateral_convs[0].conv.bias is not None and dec.classifier.kernel_size == (3, 3)
    feats = [torch.randn(1, 12, 4, 6) for _ in range(4)]
    with torch.inference_mode():
        levels = dec.neck(feats)
        # a linear neck: p_i = W_i x_i + b_i, summed top-down, then a 3x3 conv
        p = [F.conv2d(x, m.conv.weight, m.conv.bias) for x, m in zip(feats, dec.lateral_convs, strict=True)]
        sum1 = p[1] + p[2] + p[3]
        expected = F.conv2d(sum1, dec.aug_convs[1].conv.weight, dec.aug_convs[1].conv.bias, padding=1)
        assert (levels[1] - expected).abs().max().item() < 1e-4
        assert dec(feats).shape == (1, 5, 16, 24)


# --------------------------------------------------------------------------- any encoder, any size
@pytest.mark.parametrize("encoder", ["mit", "swin", "vit"])
@pytest.mark.parametrize("size", [(64, 64), (67, 93)])
def test_output_shape(encoder, size):
    """Hierarchical encoders: the 1/4 map upsampled x4 (stride 1 over the encoder's ceil(H/4) grid).
    ViT: 1/16 maps x4 give 1/4 logits over the padded grid, which Segmentor.unpad brings to H x W."""
    model = mla_model(encoder)
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        out = model(x)
    h, w = size
    expected = (h, w) if encoder == "vit" else (4 * -(-h // 4), 4 * -(-w // 4))
    assert out.shape == (2, 5, *expected)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("encoder", ["mit", "vit"])
def test_gradients_reach_every_level(encoder):
    model = mla_model(encoder, aux_heads=True).train()
    out = model.forward_train(torch.randn(2, 3, 67, 93))
    assert set(out.aux) == {"aux0", "aux1", "aux2", "aux3"} and set(out.aux_weights.values()) == {0.4}
    # ViT: Segmentor.unpad brings every map to the input's size; MiT: the neck's 1/4 maps
    aux_size = (67, 93) if encoder == "vit" else (17, 24)
    assert all(a.shape == (2, 5, *aux_size) for a in out.aux.values())
    loss = out.logits.square().mean() + sum(a.square().mean() for a in out.aux.values())
    loss.backward()
    for name, p in model.decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    first = next(model.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_aux_heads_are_off_by_default_and_only_in_training():
    model = mla_model("mit")
    assert not hasattr(model.decoder, "aux_heads")
    assert model.forward_train(torch.randn(1, 3, 32, 32)).aux == {}
    with_aux = mla_model("mit", aux_heads=True)
    x = torch.randn(1, 3, 32, 32)
    out = with_aux.forward_train(x)
    assert out.aux["aux0"].shape == (1, 5, 8, 8)  # the neck's 1/4 maps
    with torch.inference_mode():
        assert torch.allclose(with_aux(x), out.logits.detach(), atol=1e-5)


# --------------------------------------------------------------------------- the top-down sum
@pytest.mark.parametrize("shapes", [
    [(12, 5, 6)] * 4,  # ViT: four maps at one size
    [(8, 17, 24), (16, 9, 12), (24, 5, 6), (32, 3, 3)],  # MiT / Swin at an odd size
])
def test_top_down_aggregation(shapes):
    """The deepest level reaches every neck output; the shallowest only its own."""
    dec = small_decoder([c for c, _, _ in shapes], seed=3)
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, c, h, w, generator=gen) for c, h, w in shapes]

    def changed(level: int) -> list[bool]:
        moved = list(feats)
        moved[level] = feats[level] + torch.randn(feats[level].shape, generator=gen)
        with torch.inference_mode():
            before, after = dec.neck(feats), dec.neck(moved)
        return [not torch.allclose(a, b) for a, b in zip(before, after, strict=True)]

    assert all(o.shape == (1, 16, *shapes[0][1:]) for o in dec.neck(feats))
    assert changed(3) == [True, True, True, True]
    assert changed(2) == [True, True, True, False]
    assert changed(0) == [True, False, False, False]


# --------------------------------------------------------------------------- config and zoo
def test_config_validation():
    for bad in ({"channels": 0}, {"head_channels": -1}, {"up_scale": 0}, {"classifier_kernel": 5},
                {"dropout": 1.0}):
        with pytest.raises(TransegError, match="MLAConfig"):
            MLAConfig(**bad)


@pytest.mark.parametrize("name", ["mla-mit-b2", "mla-mit-b5", "mla-swin-t", "mla-vit-l16", "upernet-mit-b2"])
def test_zoo_configs_round_trip(name):
    config = model_config(name)
    assert model_config_from_json(config.to_json()) == config
    assert config.num_classes == 150 and name in transeg.list_models()


def test_setr_vit_l16_entry():
    config = model_config("mla-vit-l16")
    enc = config.encoder_config
    assert (enc.embed_dim, enc.depth, enc.heads, enc.patch_size) == (1024, 24, 16, 16)
    assert enc.out_indices == (5, 11, 17, 23) and enc.pos_interpolation == "bilinear" and not enc.distilled
    assert config.mean == config.std == VIT_MEAN
    with torch.device("meta"):
        model = build_model(config)
    params = count_parameters(model)
    assert round(params["decoder"] / 1e6, 2) == 5.27
    assert model.encoder.strides == (16,) * 4


def test_decoder_width_sets_the_neck():
    config = with_decoder_width(model_config("mla-mit-b2"), 128)
    assert config.decoder_config.channels == 128 and config.decoder_config.head_channels == 128
    assert config.name == "mla-mit-b2-c128"


# --------------------------------------------------------------------------- SegFormer Table 3
class _Pyramid(nn.Module):
    """A stand-in encoder for counting a decoder alone: zero maps of the given channels and strides."""

    def __init__(self, decoder: nn.Module, channels: Sequence[int], strides: Sequence[int]) -> None:
        super().__init__()
        self.decoder, self.channels, self.strides = decoder, tuple(channels), tuple(strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        feats = [x.new_zeros(b, c, -(-h // s), -(-w // s)) for c, s in zip(self.channels, self.strides, strict=True)]
        return self.decoder(feats)


PYRAMIDS = {
    "mit-b2": ((64, 128, 320, 512), (4, 8, 16, 32)),
    "swin-t": ((96, 192, 384, 768), (4, 8, 16, 32)),
    "vit-l": ((1024,) * 4, (16,) * 4),
}
DECODERS = {
    "mla": lambda ch: MLADecoder(ch, 150, MLAConfig()),
    "mlp": lambda ch: MLPDecoder(ch, 150, MLPDecoderConfig(embed_dim=768)),
    "uper": lambda ch: UperNetDecoder(ch, 150, UperNetConfig(channels=512)),  # no auxiliary head
}


def decoder_size(decoder: str, encoder: str) -> tuple[float, float, nn.Module]:
    """(params in M, GMACs at 512x512 as the papers count them, the module), 150 classes."""
    channels, strides = PYRAMIDS[encoder]
    with torch.device("meta"):
        dec = DECODERS[decoder](channels)
    params = sum(p.numel() for p in dec.parameters()) / 1e6
    return params, count_macs(_Pyramid(dec, channels, strides), (512, 512)) / 1e9, dec


# SegFormer Table 3: decoder params (M) and GFLOPs (multiply-adds) at 512x512, ADE20K.
TABLE3 = {
    ("uper", "mit-b2"): (29.7, 210.7),
    ("mlp", "mit-b2"): (3.3, 42.1),
    ("mlp", "swin-t"): (3.6, 42.8),
    ("uper", "swin-t"): (31.4, 211.3),
}


@pytest.mark.parametrize(("decoder", "encoder"), list(TABLE3))
def test_table3_mlp_and_upernet(decoder, encoder):
    params, gmacs, _ = decoder_size(decoder, encoder)
    paper_params, paper_gmacs = TABLE3[decoder, encoder]
    assert params == pytest.approx(paper_params, rel=0.02)
    assert gmacs == pytest.approx(paper_gmacs, rel=0.01)


def test_table3_mla_on_mit_b2():
    """Table 3: 4.2 M, 87.7 GFLOPs. With the 3x3 convs at 1/4 and the classifier after the x4
    upsampling the MACs match (88.30, +0.7%); the parameters are 4.48 M (+6.6%). The paper's pair is
    exactly this decoder without its four 1x1 projections (4.21 M, 87.78): its count seems to have
    left them out. A decoder without them cannot add 64- to 512-channel maps, so they stay."""
    params, gmacs, dec = decoder_size("mla", "mit-b2")
    assert params == pytest.approx(4.476, abs=0.001)
    assert gmacs == pytest.approx(87.7, rel=0.01)
    lateral = sum(p.numel() for p in dec.lateral_convs.parameters()) / 1e6
    lateral_gmacs = sum(c * 256 * (512 // s) ** 2 for c, s in zip(*PYRAMIDS["mit-b2"], strict=True)) / 1e9
    assert params - lateral == pytest.approx(4.2, abs=0.02)
    assert gmacs - lateral_gmacs == pytest.approx(87.7, rel=0.002)
    # the 1x1 classifier at full resolution is 20.1 of those GMACs; transeg runs it at 1/4 (1.3)
    executed = count_macs(_Pyramid(dec, *PYRAMIDS["mit-b2"]), (512, 512), paper_form=False) / 1e9
    assert gmacs - executed == pytest.approx(512 * 150 * (512**2 - 128**2) / 1e9, rel=1e-6)


def test_cli_info_mla_mit_b2():
    from click.testing import CliRunner

    from transeg.cli import cli

    result = CliRunner().invoke(cli, ["info", "mla-mit-b2"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("mla-mit-b2  (150 classes, input 512x512)")
    numbers = dict(re.findall(r"(encoder|decoder|total)\s+([\d.]+) M", result.output))
    assert numbers == {"encoder": "24.20", "decoder": "4.48", "total": "28.67"}
    paper, executed = (float(v) for v in re.findall(r"^\s+(?:GMACs\s+)?([\d.]+)\s", result.output, re.M))
    # MiT-B2's encoder (Table 1a: 62.4 in all minus 42.1 for the MLP decoder) plus MLA's 88.3
    assert paper == pytest.approx(20.2 + 88.3, rel=0.01)
    assert executed < paper
