"""UperNet decoder: the PPM/FPN math against a reference, any encoder, odd sizes, the auxiliary head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import transeg
from tests.models.test_segmenter import randomize
from transeg.models.config import ModelConfig
from transeg.models.decoders.uper import UperNetConfig, UperNetDecoder, UperNetFusion
from transeg.models.encoders.swin import SwinConfig
from transeg.models.factory import build_model
from transeg.models.zoo import MIT_VARIANTS

TINY_SWIN = SwinConfig(embed_dim=32, depths=(2, 2, 2, 2), heads=(1, 2, 4, 8))


def uper_model(encoder: str = "swin", num_classes: int = 5, seed: int = 0, **decoder) -> transeg.Segmentor:
    encoder_config = TINY_SWIN if encoder == "swin" else MIT_VARIANTS["b0"]
    config = ModelConfig(encoder=encoder, encoder_config=encoder_config, decoder="uper",
                         decoder_config=UperNetConfig(**{"channels": 32, **decoder}), num_classes=num_classes)
    torch.manual_seed(seed)
    model = build_model(config)
    randomize(model, seed)
    return model.eval()


def _conv_module(m, x: torch.Tensor) -> torch.Tensor:
    """ConvModule from its parameters: conv (no bias), BatchNorm with running statistics, ReLU."""
    y = F.conv2d(x, m.conv.weight, None, padding=m.conv.padding)
    y = F.batch_norm(y, m.bn.running_mean, m.bn.running_var, m.bn.weight, m.bn.bias, False, 0.0, m.bn.eps)
    return F.relu(y)


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def reference_upernet(dec: UperNetDecoder, feats: list[torch.Tensor]) -> torch.Tensor:
    """MMSegmentation's ``UPerHead.forward`` (eval) written out from the decoder's parameters."""
    fusion = dec.fusion
    x = feats[-1]
    psp = [x] + [_up(_conv_module(m, F.adaptive_avg_pool2d(x, s)), x.shape[2:])
                 for s, m in zip(fusion.ppm.pool_scales, fusion.ppm.convs, strict=True)]
    laterals = [_conv_module(m, f) for m, f in zip(fusion.lateral_convs, feats[:-1], strict=True)]
    laterals.append(_conv_module(fusion.ppm.bottleneck, torch.cat(psp, 1)))
    for i in range(len(laterals) - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + _up(laterals[i], laterals[i - 1].shape[2:])
    outs = [_conv_module(m, lat) for m, lat in zip(fusion.fpn_convs, laterals[:-1], strict=True)] + [laterals[-1]]
    outs = [outs[0]] + [_up(o, outs[0].shape[2:]) for o in outs[1:]]
    fused = _conv_module(fusion.fpn_bottleneck, torch.cat(outs, 1))
    return F.conv2d(fused, dec.classifier.weight, dec.classifier.bias)


def _randomize_bn_stats(module: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(3)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


@pytest.mark.parametrize("size", [(64, 64), (37, 53)])
def test_decoder_matches_the_reference(size):
    """Odd maps (10x14, 5x7, 3x4, 2x2 from 37x53) exercise every resize of the top-down path."""
    model = uper_model(seed=1)
    _randomize_bn_stats(model.decoder)
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        feats = model.encoder(x)
        got = model.decoder(feats)
        expected = reference_upernet(model.decoder, feats)
    assert got.shape == (2, 5, -(-size[0] // 4), -(-size[1] // 4))
    assert (got - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("encoder", ["swin", "mit"])
@pytest.mark.parametrize("size", [(64, 64), (75, 101), (33, 47)])
def test_any_encoder_any_size(encoder, size):
    """On Swin and on segformer-b0's MiT: logits at the first map's size (stride 4, ceil)."""
    model = uper_model(encoder)
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        logits = model(x)
        first = model.encoder(x)[0]
    assert logits.shape == (1, 5, *first.shape[-2:])
    assert logits.shape[-2:] == (-(-size[0] // 4), -(-size[1] // 4))
    assert logits.isfinite().all()


def test_fusion_alone():
    """``UperNetFusion`` is the fused map before dropout and classifier (SegDeformer's UperNet fusion)."""
    model = uper_model("mit", seed=2)
    feats = [torch.randn(2, c, 16 // 2**i, 24 // 2**i) for i, c in enumerate(model.encoder.out_channels)]
    dec = model.decoder
    with torch.inference_mode():
        fused = dec.fusion(feats)
        assert fused.shape == (2, 32, 16, 24) and dec.fusion.out_channels == 32
        assert torch.allclose(dec(feats), dec.classifier(fused), atol=1e-6)
    standalone = UperNetFusion([8, 16, 24], channels=12, pool_scales=(1, 3)).eval()
    with torch.inference_mode():
        out = standalone([torch.randn(1, 8, 9, 9), torch.randn(1, 16, 5, 5), torch.randn(1, 24, 3, 3)])
    assert out.shape == (1, 12, 9, 9)


def test_auxiliary_head_in_training_only():
    model = uper_model(aux_channels=16, seed=3).train()
    x = torch.randn(2, 3, 64, 96)  # batch 2: the 1x1-pooled PPM branch needs it for BatchNorm
    out = model.forward_train(x)
    assert out.logits.shape == (2, 5, 16, 24)
    assert out.aux["aux"].shape == (2, 5, 4, 6)  # on stage 3, stride 16
    assert out.aux_weights == {"aux": 0.4}
    (out.logits.mean() + out.aux["aux"].mean()).backward()
    assert model.decoder.aux.conv.conv.weight.grad is not None
    plain = uper_model(seed=3).train()
    assert plain.forward_train(x).aux == {} and not hasattr(plain.decoder, "aux")


def test_bad_settings_name_the_field():
    with pytest.raises(transeg.TransegError, match="aux_index 4"):
        UperNetDecoder([8, 16, 32, 64], 3, UperNetConfig(aux_channels=8, aux_index=4))
    with pytest.raises(transeg.TransegError, match="pool_scales"):
        UperNetConfig(pool_scales=(0, 2))


def test_parameter_count_formula():
    """channels C, levels C_i, scales P: PPM P*C_4*C + bottleneck 9(C_4 + P C)C, laterals, FPN and
    fpn_bottleneck 3x3 convs, BatchNorms 2C each, classifier."""
    in_channels, c, k = (96, 192, 384, 768), 512, 150
    dec = UperNetDecoder(in_channels, k, UperNetConfig(channels=c))
    convs = (4 * 768 * c + 9 * (768 + 4 * c) * c + sum(in_channels[:-1]) * c + 3 * 9 * c * c + 9 * 4 * c * c)
    bns = (4 + 1 + 3 + 3 + 1) * 2 * c
    assert sum(p.numel() for p in dec.parameters()) == convs + bns + c * k + k
