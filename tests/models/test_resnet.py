"""ResNet / ResNeXt encoders and SegFormer Table 1d: parity with transformers' ResNet, parameter counts,
the table's GMACs and parameters, checkpoint formats, and the MLP decoder's stage selection ("S4")."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from tests.conftest import randomize_batchnorm
from transeg.cli import cli
from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.decoders.mlp import MLPDecoder, MLPDecoderConfig
from transeg.models.encoders.resnet import ResNet, ResNetConfig
from transeg.models.factory import build_model, model_config_from_dict
from transeg.models.zoo import RESNET_VARIANTS, model_config
from transeg.weights.load import load_encoder_weights, load_model
from transeg.weights.native import save_model
from transeg.weights.resnet import hf_resnet_to_transeg, torchvision_to_transeg

R50 = ResNetConfig()  # 7x7 stem, as torchvision and transformers
TINY = ResNetConfig(depths=(1, 1, 1, 1))


def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random conv weights at a scale that keeps activations O(1) through the network, and random
    BatchNorm affine parameters and statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / fan_in**0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(0.5 * torch.rand(m.weight.shape, generator=gen) + 0.25)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return module.eval()


def _hf_resnet(depths: tuple[int, ...]):
    transformers = pytest.importorskip("transformers")
    config = transformers.ResNetConfig(
        num_channels=3, embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=list(depths),
        layer_type="bottleneck", hidden_act="relu", downsample_in_first_stage=False,
        downsample_in_bottleneck=False,  # stride on the 3x3 conv (v1.5), as microsoft/resnet-50
    )
    with torch.device("meta"):  # every tensor is set by _randomize: skip the initialisation
        model = transformers.ResNetModel(config)
    return _randomize(model.to_empty(device="cpu"))


# --------------------------------------------------------------------------- (a) parity
def test_resnet50_matches_transformers_resnet():
    hf = _hf_resnet(R50.depths)
    ours = ResNet(R50).eval()
    ours.load_state_dict(hf_resnet_to_transeg(hf.state_dict()), strict=True)
    x = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(x, output_hidden_states=True).hidden_states[1:]  # [0] is the stem's output
        got = ours(x)
    assert [tuple(t.shape) for t in got] == [(1, 256, 24, 16), (1, 512, 12, 8), (1, 1024, 6, 4), (1, 2048, 3, 2)]
    for a, b in zip(got, expected, strict=True):
        assert b.abs().max() > 0.1  # not a vanishing signal
        assert (a - b).abs().max() < 1e-4


def test_transformers_directory_loads_as_encoder_weights(tmp_path):
    hf = _hf_resnet(TINY.depths)
    hf.save_pretrained(tmp_path)
    model = build_model(_config(TINY))
    load_encoder_weights(model, tmp_path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.encoder(x), hf(x, output_hidden_states=True).hidden_states[1:], strict=True):
            assert (a - b).abs().max() < 1e-4
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "downsample_in_bottleneck": True}))
    with pytest.raises(TransegError, match="ResNet v1"):
        load_encoder_weights(model, tmp_path)


# --------------------------------------------------------------------------- (b) parameter counts
# torchvision's totals (ResNet-50 25,557,032; ResNet-101 44,549,160; ResNeXt-101 64x4d 83,455,272)
# and timm's ResNeXt-101 32x4d (44,177,704), less the 2048 x 1000 + 1000 classifier.
FC = 2048 * 1000 + 1000


@pytest.mark.parametrize(("config", "params"), [
    (R50, 25_557_032 - FC),  # 23.51 M
    (ResNetConfig(depths=(3, 4, 23, 3)), 44_549_160 - FC),  # 42.50 M
    (ResNetConfig(depths=(3, 4, 23, 3), groups=32, width_per_group=4), 44_177_704 - FC),  # 42.13 M
    (ResNetConfig(depths=(3, 4, 23, 3), groups=64, width_per_group=4), 83_455_272 - FC),  # 81.41 M
])
def test_encoder_parameter_counts(config, params):
    assert sum(p.numel() for p in ResNet(config).parameters()) == params


def test_deep_stem_parameters_and_shapes():
    # three 3x3 convs 3->32->32->64 (+ BN) in place of the 7x7 3->64 conv (+ BN)
    deep = ResNet(dataclasses.replace(TINY, deep_stem=True))
    stem = 9 * (3 * 32 + 32 * 32 + 32 * 64) + 2 * (32 + 32 + 64)
    standard = sum(p.numel() for p in ResNet(TINY).parameters())
    assert sum(p.numel() for p in deep.parameters()) == standard - (49 * 3 * 64 + 128) + stem
    with torch.no_grad():
        out = deep(torch.randn(1, 3, 65, 97))
    assert [tuple(t.shape[1:]) for t in out] == [(256, 17, 25), (512, 9, 13), (1024, 5, 7), (2048, 3, 4)]
    assert deep.out_channels == (256, 512, 1024, 2048) and deep.strides == (4, 8, 16, 32)


def test_out_stages_build_only_what_they_need():
    encoder = ResNet(dataclasses.replace(TINY, out_stages=(1, 2)))
    assert encoder.out_channels == (512, 1024) and encoder.strides == (8, 16)
    assert not hasattr(encoder, "layer4")
    assert [t.shape[1] for t in encoder(torch.randn(1, 3, 64, 64))] == [512, 1024]
    with pytest.raises(TransegError, match="out_stages"):
        ResNetConfig(out_stages=(2, 1))


# --------------------------------------------------------------------------- (c) SegFormer Table 1d
# (GFLOPs as the paper counts them = GMACs, params in M) at 512x512 with 150 classes. MiT-B2 (S1-4)
# is listed with 27.7 M in Table 1d but 27.5 M (24.2 + 3.3) in Tables 1a and 2: transeg has 27.46 M.
TABLE_1D = {
    "segformer-r50": (69.2, 29.0),
    "segformer-r101": (88.7, 47.9),
    "segformer-x101": (127.5, 86.8),
    "segformer-b2-s4": (22.3, 24.7),
}


@pytest.mark.parametrize("name", list(TABLE_1D))
def test_info_reproduces_segformer_table_1d(name):
    result = CliRunner().invoke(cli, ["info", name, "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    gmacs, params = TABLE_1D[name]
    assert stats["gmacs"] == pytest.approx(gmacs, rel=0.02)
    assert stats["params"]["total"] / 1e6 == pytest.approx(params, rel=0.02)


def test_table_1d_variants():
    assert RESNET_VARIANTS["r50"].deep_stem and RESNET_VARIANTS["r101"].deep_stem
    x101 = RESNET_VARIANTS["x101"]
    assert (x101.groups, x101.width_per_group, x101.deep_stem) == (64, 4, False)
    for name in ("segformer-r50", "segformer-r101", "segformer-x101", "segformer-b2-s4"):
        assert model_config(name).decoder_config.embed_dim == 768


# --------------------------------------------------------------------------- (d) checkpoint formats
def _config(encoder: ResNetConfig, decoder: MLPDecoderConfig | None = None) -> ModelConfig:
    return ModelConfig(encoder="resnet", encoder_config=encoder, decoder="mlp",
                       decoder_config=decoder or MLPDecoderConfig(embed_dim=32), num_classes=5)


def _assert_same_encoder(model, reference: torch.nn.Module) -> None:
    expected = reference.state_dict()
    got = model.encoder.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(got[key], value), key


def test_torchvision_checkpoint_loads_directly(tmp_path):
    source = _randomize(ResNet(TINY))
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    state |= {"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)}  # torchvision's layout
    torch.save(state, tmp_path / "resnet.pth")
    model = build_model(_config(TINY))
    load_encoder_weights(model, tmp_path / "resnet.pth")
    _assert_same_encoder(model, source)
    # the names are torchvision's: only the classifier is dropped
    assert set(torchvision_to_transeg(state)) == set(state) - {"fc.weight", "fc.bias"}
    with pytest.raises(TransegError, match="only its backbone is read"):
        load_model(tmp_path / "resnet.pth")
    # a 7x7-stem checkpoint in a deep-stem model is named as such
    deep = build_model(_config(dataclasses.replace(TINY, deep_stem=True)))
    with pytest.raises(TransegError, match="7x7 stem; the model has the deep"):
        load_encoder_weights(deep, tmp_path / "resnet.pth")


_TO_MMSEG_STEM = {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4", "conv3": "6", "bn3": "7"}


def test_mmsegmentation_v1c_checkpoint_loads(tmp_path):
    config = dataclasses.replace(TINY, deep_stem=True)
    source = _randomize(ResNet(config))
    state = {}
    for key, value in source.state_dict().items():
        if key.startswith("stem."):
            _, name, rest = key.split(".", 2)
            key = f"stem.{_TO_MMSEG_STEM[name]}.{rest}"
        state[f"backbone.{key}"] = value
    state |= {"decode_head.conv_seg.weight": torch.randn(5, 8, 1, 1), "auxiliary_head.conv_seg.bias": torch.randn(5)}
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "fcn_r50-d8.pth")
    model = build_model(_config(config))
    load_encoder_weights(model, tmp_path / "fcn_r50-d8.pth")
    _assert_same_encoder(model, source)


def test_transeg_file_round_trip_and_encoder_weights(tmp_path):
    config = _config(dataclasses.replace(TINY, deep_stem=True), MLPDecoderConfig(embed_dim=16, in_stages=(1, 3)))
    model = build_model(config)
    _randomize(model)
    path = save_model(model, tmp_path / "model.safetensors")
    loaded = load_model(path)
    assert loaded.config == config and loaded.config.decoder_config.in_stages == (1, 3)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    fresh = build_model(config)
    load_encoder_weights(fresh, path)
    _assert_same_encoder(fresh, model.encoder)


def test_fewer_built_stages_drop_the_checkpoints_deeper_ones(tmp_path):
    source = _randomize(ResNet(TINY))
    torch.save(source.state_dict(), tmp_path / "resnet.pth")
    model = build_model(_config(dataclasses.replace(TINY, out_stages=(0, 1, 2)), MLPDecoderConfig(embed_dim=8)))
    load_encoder_weights(model, tmp_path / "resnet.pth")
    assert torch.equal(model.encoder.layer3[0].conv2.weight, source.layer3[0].conv2.weight)


# --------------------------------------------------------------------------- (e) stage selection
MIT_B0 = (32, 64, 160, 256)


def _features(size: tuple[int, int] = (24, 34), batch: int = 2) -> list[torch.Tensor]:
    h, w = size
    strides = (1, 2, 4, 8)
    return [torch.randn(batch, c, (h + s - 1) // s, (w + s - 1) // s) for c, s in zip(MIT_B0, strides, strict=True)]


def _decoder(in_stages: tuple[int, ...] | None, embed_dim: int = 48) -> MLPDecoder:
    torch.manual_seed(0)
    decoder = MLPDecoder(MIT_B0, 7, MLPDecoderConfig(embed_dim=embed_dim, in_stages=in_stages))
    for proj in decoder.proj:
        torch.nn.init.normal_(proj.bias)
    randomize_batchnorm(decoder)
    return decoder.eval()


def test_stage4_only_state_dict_and_output():
    decoder = _decoder((3,))
    assert sorted(decoder.state_dict()) == sorted([
        "proj.0.weight", "proj.0.bias", "classifier.weight", "classifier.bias",
        "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var", "norm.num_batches_tracked",
    ])
    assert decoder.proj[0].weight.shape == (48, 256) and decoder.fuse is None
    xs = _features()
    with torch.no_grad():
        fast = decoder(xs)  # eval: BatchNorm folded, channels last
        decoder.fused_projection = False
        literal = decoder(xs)
    # the literal form, written out: project stage 4, upsample to 1/4, BN, ReLU, classify
    p = decoder.proj[0]
    y = torch.nn.functional.conv2d(xs[3], p.weight[:, :, None, None], p.bias)
    y = torch.nn.functional.interpolate(y, size=xs[0].shape[2:], mode="bilinear", align_corners=False)
    by_hand = decoder.classifier(torch.relu(decoder.norm(y)))
    assert fast.shape == (2, 7, 24, 34)
    assert (fast - literal).abs().max() < 1e-5
    assert (literal - by_hand).abs().max() < 1e-5
    # the stages it does not read do not matter
    xs[0] = torch.randn_like(xs[0])
    with torch.no_grad():
        assert (decoder(xs) - literal).abs().max() < 1e-5


@pytest.mark.parametrize("in_stages", [(1, 3), (0, 2, 3), None])
def test_stage_subsets_composed_equal_literal(in_stages):
    decoder = _decoder(in_stages)
    n = len(in_stages or MIT_B0)
    assert decoder.fuse.weight.shape == (48, 48 * n, 1, 1)
    assert [p.weight.shape[1] for p in decoder.proj] == [MIT_B0[s] for s in (in_stages or range(4))]
    xs = _features((17, 23))
    with torch.no_grad():
        fast = decoder(xs)
        decoder.fused_projection = False
        literal = decoder(xs)
        decoder.fused_projection = True
        composed = decoder.classifier(decoder.fused_features(xs))
    assert (fast - literal).abs().max() < 1e-5
    assert (composed - literal).abs().max() < 1e-5


def test_stage4_only_gradients_and_model_keys():
    decoder = _decoder((3,)).train()
    xs = [x.requires_grad_() for x in _features((16, 16))]
    decoder(xs).square().mean().backward()
    assert xs[0].grad is None and xs[3].grad is not None
    config = model_config("segformer-b2-s4")
    decoder = MLPDecoder(config.encoder_config.widths, 150, config.decoder_config)
    assert {k for k in decoder.state_dict() if k.startswith("proj.")} == {"proj.0.weight", "proj.0.bias"}
    assert decoder.proj[0].weight.shape == (768, 512) and not any(k.startswith("fuse") for k in decoder.state_dict())


def test_in_stages_validation():
    with pytest.raises(TransegError, match="increasing"):
        MLPDecoderConfig(in_stages=(3, 1))
    with pytest.raises(TransegError, match="increasing"):
        MLPDecoderConfig(in_stages=())
    with pytest.raises(TransegError, match="lacks"):
        MLPDecoder(MIT_B0, 3, MLPDecoderConfig(in_stages=(4,)))
    data = json.loads(json.dumps(model_config("segformer-b2-s4").to_dict()))
    assert model_config_from_dict(data).decoder_config.in_stages == (3,)
    data["decoder_config"]["in_stages"] = [3, 1]
    with pytest.raises(TransegError, match="MLPDecoderConfig: in_stages"):
        model_config_from_dict(data, source="model.json")
