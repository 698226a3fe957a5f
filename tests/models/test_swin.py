"""Swin encoder: parity with transformers, window/shift/padding behaviour, weight formats, the zoo."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import transeg
from tests.models.test_segmenter import randomize
from transeg.analysis.complexity import count_parameters
from transeg.models.config import ModelConfig
from transeg.models.decoders.uper import UperNetConfig
from transeg.models.encoders.swin import SwinConfig, relative_position_index, shift_mask
from transeg.models.factory import build_model, model_config_from_json
from transeg.models.zoo import model_config
from transeg.weights.load import load_encoder_weights
from transeg.weights.swin import hf_swin_to_transeg, resize_bias_table, timm_swin_to_transeg

TINY = SwinConfig(embed_dim=32, depths=(2, 2, 2, 2), heads=(1, 2, 4, 8), window_size=7, drop_path_rate=0.1)


def tiny_swin(seed: int = 0, num_classes: int = 5, **changes) -> transeg.Segmentor:
    config = ModelConfig(encoder="swin", encoder_config=dataclasses.replace(TINY, **changes), decoder="uper",
                         decoder_config=UperNetConfig(channels=32), num_classes=num_classes, name="tiny")
    torch.manual_seed(seed)
    model = build_model(config)
    randomize(model, seed)
    return model


# --------------------------------------------------------------------------- parity with transformers
def _hf(tmp_path, cls_name: str = "SwinBackbone", seed: int = 1, window_size: int = 7, **config):
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.SwinConfig(image_size=224, embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                                        window_size=window_size, drop_path_rate=0.0, **config)
    torch.manual_seed(seed)
    hf = getattr(transformers, cls_name)(hf_config).eval()
    randomize(hf, seed)
    hf.save_pretrained(tmp_path)
    return hf


# 224: the window grid divides every stage (56, 28, 14 and 7 = the window); 97x131: every stage
# is padded (25x33 -> 28x35, ...), and the last stages are smaller than the window.
SIZES = [(224, 224), (97, 131)]


@pytest.mark.parametrize("size", SIZES)
def test_encoder_matches_transformers_swin_backbone(tmp_path, size):
    """``SwinBackbone`` pads like the official segmentation backbone (``always_partition``) and
    normalises each stage (``hidden_states_norms`` = our ``norm{i}``): the whole output agrees."""
    hf = _hf(tmp_path, out_features=["stage1", "stage2", "stage3", "stage4"])
    model = tiny_swin(seed=5)
    load_encoder_weights(model, tmp_path)
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        expected = hf(pixel_values=x).feature_maps
        got = model.encoder(x)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g.shape == e.shape == (2, 32 * 2**i, -(-size[0] // 2 ** (i + 2)), -(-size[1] // 2 ** (i + 2)))
        assert (g - e).abs().max().item() < 1e-4, i


@pytest.mark.parametrize("size", SIZES)
def test_encoder_matches_transformers_swin_model(tmp_path, size):
    """``SwinModel`` (saved with 4.x names by ``save_pretrained``) has no output norms: its
    pre-downsampling stage states equal ours before ``norm{i}``. With ``always_partition`` it pads
    as the segmentation backbone; without, it shrinks the window of maps smaller than the window
    and stops shifting them (the classification code), which is not what segmentation does."""
    hf = _hf(tmp_path, "SwinForImageClassification", num_labels=7)
    model = tiny_swin(seed=6)
    load_encoder_weights(model, tmp_path)
    for i in range(4):
        setattr(model.encoder, f"norm{i}", torch.nn.Identity())
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        out = hf.swin(pixel_values=x, output_hidden_states=True, always_partition=True,
                      output_hidden_states_before_downsampling=True)
        got = model.encoder(x)
    for g, e in zip(got, out.reshaped_hidden_states[1:], strict=True):
        # un-normalised residual streams reach magnitudes in the hundreds: compare relative to them
        # un-normalised residual streams reach magnitudes over 100, and the attention is written
        # with another association than transformers': compare relative to the magnitude
        assert (g - e).abs().max().item() < 1e-5 * e.abs().max().item()


def test_transformers_5x_in_memory_names_load(tmp_path):
    hf = _hf(tmp_path, "SwinModel", seed=2)
    model = tiny_swin(seed=7)
    load_encoder_weights(model, tmp_path)  # 4.x names, as save_pretrained writes them
    saved = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    in_memory = hf.state_dict()
    assert any(".q_proj." in k for k in in_memory)
    save_file({k: v.contiguous() for k, v in in_memory.items()}, tmp_path / "model.safetensors")
    other = tiny_swin(seed=8)
    load_encoder_weights(other, tmp_path)
    for key, value in other.encoder.state_dict().items():
        if not key.startswith("norm"):  # SwinModel has no output norms: each model keeps its own
            assert torch.equal(value, saved[key]), key


def test_transformers_missing_value_is_named():
    state = {"encoder.layers.0.blocks.0.attention.self.query.weight": torch.ones(2, 2),
             "encoder.layers.0.blocks.0.attention.self.key.weight": torch.ones(2, 2),
             "embeddings.patch_embeddings.projection.weight": torch.ones(2, 3, 4, 4)}
    with pytest.raises(transeg.TransegError, match=r"layers\.0\.blocks\.0\.attn\.qkv\.weight lacks"):
        hf_swin_to_transeg(state)


# --------------------------------------------------------------------------- encoder behaviour
def test_strides_channels_and_odd_sizes():
    enc = tiny_swin().encoder.eval()
    assert enc.out_channels == (32, 64, 128, 256) and enc.strides == (4, 8, 16, 32)
    with torch.inference_mode():
        shapes = [f.shape[-2:] for f in enc(torch.randn(1, 3, 33, 70))]
    assert shapes == [(9, 18), (5, 9), (3, 5), (2, 3)]  # ceil at every stride


def test_out_indices_select_stages():
    enc = tiny_swin(out_indices=(1, 2)).encoder.eval()
    assert enc.out_channels == (64, 128) and enc.strides == (8, 16)
    assert not hasattr(enc, "norm0") and hasattr(enc, "norm2")
    with torch.inference_mode():
        assert [f.shape[1] for f in enc(torch.randn(1, 3, 64, 64))] == [64, 128]


@pytest.mark.parametrize("bad", [dict(out_indices=(2, 1)), dict(out_indices=(4,)), dict(heads=(1, 2, 3, 8)),
                                 dict(depths=(2, 2, 2))])
def test_bad_configs_name_the_field(bad):
    with pytest.raises(transeg.TransegError, match=next(iter(bad))):
        dataclasses.replace(TINY, **bad)


def _regions(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """(h, w) region labels of the rolled map, written as the official code's slices."""
    region = torch.zeros(h, w)
    slices = [slice(0, -ws), slice(-ws, -shift), slice(-shift, None)]
    for k, sl in enumerate(slices):
        region[sl, :] += 3 * k
        region[:, sl] += k
    return region


def test_relative_position_index_and_shift_mask():
    index = relative_position_index(3)
    assert index.shape == (9, 9) and index.max() == 24 and torch.equal(index.diagonal(), torch.full((9,), 12))
    assert index[0, 8] == 0  # query at (0, 0), key at (2, 2): offset (-2, -2), the first row of the table
    mask = shift_mask(6, 6, 3, 1, torch.device("cpu"), torch.float32)
    assert mask.shape == (4, 9, 9)
    assert torch.equal(mask[0], torch.zeros(9, 9))  # the top-left window does not wrap around
    last = _regions(6, 6, 3, 1)[3:, 3:].reshape(9)  # the bottom-right window: 4 regions
    assert torch.equal(mask[-1], torch.where(last[:, None] == last[None, :], 0.0, -100.0))


def test_shifted_window_block_reference():
    """A shifted block of stage 1 (2 heads) against explicit loops over windows, heads and pairs."""
    enc = tiny_swin(seed=3).encoder.eval()
    block = enc.layers[1].blocks[1]
    attn, c, heads, d = block.attn, 64, 2, 32
    assert block.shift == 3 and attn.heads == heads
    x = torch.randn(1, 10, 12, c)  # padded to 14x14: 4 windows
    hp = wp = 14
    with torch.inference_mode():
        got = block(x, shift_mask(hp, wp, 7, 3, x.device, x.dtype))
        y = F.pad(F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias, 1e-5), (0, 0, 0, 2, 0, 4))
        y = torch.roll(y, (-3, -3), (1, 2))
        region = _regions(hp, wp, 7, 3)
        table = attn.relative_position_bias_table
        out = torch.zeros_like(y)
        for r in range(0, hp, 7):
            for col in range(0, wp, 7):
                win = y[0, r:r + 7, col:col + 7].reshape(49, c)
                q, k, v = (win @ attn.qkv.weight.T + attn.qkv.bias).chunk(3, dim=-1)
                reg = region[r:r + 7, col:col + 7].reshape(49)
                outs = []
                for h in range(heads):
                    qh, kh, vh = (t[:, h * d:(h + 1) * d] for t in (q, k, v))
                    logits = qh @ kh.T / d**0.5
                    for i in range(49):
                        for j in range(49):
                            dy, dx = i // 7 - j // 7, i % 7 - j % 7
                            logits[i, j] += table[(dy + 6) * 13 + dx + 6, h] - (100.0 if reg[i] != reg[j] else 0.0)
                    outs.append(torch.softmax(logits, -1) @ vh)
                proj = torch.cat(outs, -1) @ attn.proj.weight.T + attn.proj.bias
                out[0, r:r + 7, col:col + 7] = proj.reshape(7, 7, c)
        x1 = x + torch.roll(out, (3, 3), (1, 2))[:, :10, :12]
        expected = x1 + block.mlp(F.layer_norm(x1, (c,), block.norm2.weight, block.norm2.bias, 1e-5))
    assert (got - expected).abs().max().item() < 1e-4


def test_patch_merging_order():
    """Concatenation order x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]; odd sizes padded."""
    merge = tiny_swin().encoder.layers[0].downsample
    x = torch.randn(1, 3, 5, 32)
    with torch.inference_mode():
        got = merge(x)
        p = F.pad(x, (0, 0, 0, 1, 0, 1))
        cat = torch.cat([p[:, 0::2, 0::2], p[:, 1::2, 0::2], p[:, 0::2, 1::2], p[:, 1::2, 1::2]], -1)
        expected = merge.reduction(merge.norm(cat))
    assert got.shape == (1, 2, 3, 64) and torch.equal(got, expected)


def test_training_step_and_drop_path():
    model = tiny_swin(seed=4).train()
    rates = [b.drop_path.drop_prob for layer in model.encoder.layers for b in layer.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)
    out = model.forward_train(torch.randn(2, 3, 60, 44))
    out.logits.mean().backward()
    table = model.encoder.layers[0].blocks[1].attn.relative_position_bias_table
    assert table.grad is not None and table.grad.abs().sum() > 0


# --------------------------------------------------------------------------- official / timm weights
def official_state(model: transeg.Segmentor, timm_layout: bool = False) -> dict[str, torch.Tensor]:
    """An ImageNet checkpoint of ``model``'s encoder as the official repository writes it (head,
    final norm, relative_position_index and attn_mask buffers; no output norms), or as timm >= 0.9
    does (merging at the start of the next stage, ``head.fc``, no buffers)."""
    enc = model.encoder
    state = {k: v.clone() for k, v in enc.state_dict().items() if not k.startswith("norm")}
    last = enc.config.widths[-1]
    state["norm.weight"], state["norm.bias"] = torch.randn(last), torch.randn(last)
    if timm_layout:
        state = {k.replace(f"layers.{i}.downsample", f"layers.{i + 1}.downsample") if f"layers.{i}.downsample" in k
                 else k: v for k, v in state.items() for i in [int(k.split(".")[1]) if k.startswith("layers.") else 0]}
        state["head.fc.weight"], state["head.fc.bias"] = torch.randn(1000, last), torch.randn(1000)
        return state
    state["head.weight"], state["head.bias"] = torch.randn(1000, last), torch.randn(1000)
    for i, layer in enumerate(enc.layers):
        for j, block in enumerate(layer.blocks):
            state[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = block.attn.relative_position_index.clone()
            if block.shift:
                state[f"layers.{i}.blocks.{j}.attn_mask"] = torch.zeros(64, 49, 49)
    return state


@pytest.mark.parametrize("timm_layout", [False, True])
def test_official_and_timm_checkpoints_initialise_the_encoder(tmp_path, timm_layout):
    source = tiny_swin(seed=1)
    state = official_state(source, timm_layout)
    if timm_layout:
        save_file(state, tmp_path / "swin.safetensors")
        path = tmp_path / "swin.safetensors"
    else:
        torch.save({"model": state}, tmp_path / "swin.pth")  # official releases wrap in "model"
        path = tmp_path / "swin.pth"
    model = tiny_swin(seed=2)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    load_encoder_weights(model, path)
    loaded = model.encoder.state_dict()
    for key, value in source.encoder.state_dict().items():
        # output norms are not in ImageNet checkpoints: the model's own values stay
        assert torch.equal(loaded[key], before[key] if key.startswith("norm") else value), key


def test_segmentation_checkpoint_backbone_with_output_norms(tmp_path):
    """An official Swin / MMSegmentation 0.x UperNet checkpoint: ``backbone.`` keys with ``norm{i}``."""
    source = tiny_swin(seed=3)
    state = {f"backbone.{k}": v for k, v in source.encoder.state_dict().items()}
    state["decode_head.conv_seg.weight"] = torch.randn(5, 32, 1, 1)
    state["auxiliary_head.conv_seg.weight"] = torch.randn(5, 16, 1, 1)
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "upernet_swin.pth")
    model = tiny_swin(seed=4)
    load_encoder_weights(model, tmp_path / "upernet_swin.pth")
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(value, model.encoder.state_dict()[key]), key
    with pytest.raises(transeg.TransegError, match="encoder_weights"):
        transeg.load_model(tmp_path / "upernet_swin.pth")


def test_transeg_file_round_trip(tmp_path):
    source = tiny_swin(seed=5)
    path = transeg.save_model(source, tmp_path / "swin.safetensors")
    loaded = transeg.load_model(path)
    assert loaded.config == source.config
    x = torch.randn(1, 3, 61, 83)
    with torch.inference_mode():
        assert torch.equal(loaded(x), source.eval()(x))
    model = tiny_swin(seed=6)
    load_encoder_weights(model, path)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(value, model.encoder.state_dict()[key]), key


def test_window_size_mismatch_resizes_the_bias_tables(tmp_path):
    """Window-7 weights in a window-12 model (a 224 ImageNet Swin-B in upernet-swin-b): tables
    13x13 -> 23x23, bicubic, as MMSegmentation does."""
    source = tiny_swin(seed=6)
    torch.save(official_state(source), tmp_path / "swin_w7.pth")
    model = tiny_swin(seed=7, window_size=12)
    load_encoder_weights(model, tmp_path / "swin_w7.pth")
    table = source.encoder.layers[2].blocks[1].attn.relative_position_bias_table.detach()
    got = model.encoder.layers[2].blocks[1].attn.relative_position_bias_table.detach()
    grid = F.interpolate(table.T.reshape(1, 4, 13, 13), size=(23, 23), mode="bicubic", align_corners=False)
    assert got.shape == (23 * 23, 4) and torch.equal(got, grid.reshape(4, -1).T)
    assert torch.equal(resize_bias_table(table, 7), table)
    with torch.inference_mode():
        assert model.encoder(torch.randn(1, 3, 64, 64))[0].isfinite().all()


def test_unknown_key_is_named():
    state = official_state(tiny_swin())
    state["layers.0.blocks.0.attn.gamma"] = torch.ones(32)
    with pytest.raises(transeg.TransegError, match=r"layers\.0\.blocks\.0\.attn\.gamma"):
        timm_swin_to_transeg(state)


def test_bad_relative_position_index_is_named():
    state = official_state(tiny_swin())
    state["layers.1.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    with pytest.raises(transeg.TransegError, match=r"layers\.1\.blocks\.0\.attn\.relative_position_index"):
        timm_swin_to_transeg(state)


def test_absolute_position_embedding_is_refused():
    state = official_state(tiny_swin())
    state["absolute_pos_embed"] = torch.zeros(1, 3136, 32)
    with pytest.raises(transeg.TransegError, match="absolute_pos_embed"):
        timm_swin_to_transeg(state)


def test_other_depth_or_heads_name_the_keys(tmp_path):
    torch.save(official_state(tiny_swin(depths=(2, 2, 4, 2))), tmp_path / "deeper.pth")
    with pytest.raises(transeg.TransegError, match=r"deeper\.pth.*unexpected layers\.2\.blocks\.2\."):
        load_encoder_weights(tiny_swin(), tmp_path / "deeper.pth")
    torch.save(official_state(tiny_swin(heads=(2, 2, 4, 8))), tmp_path / "heads.pth")
    with pytest.raises(transeg.TransegError, match=r"layers\.0\.blocks\.0\.attn\.relative_position_bias_table"):
        load_encoder_weights(tiny_swin(), tmp_path / "heads.pth")


def test_not_a_swin_checkpoint(tmp_path):
    torch.save({"model": {"blocks.0.norm1.weight": torch.ones(3)}}, tmp_path / "vit.pth")
    with pytest.raises(transeg.TransegError, match="no Swin weights"):
        load_encoder_weights(tiny_swin(), tmp_path / "vit.pth")


# --------------------------------------------------------------------------- zoo
# UperNet + Swin parameters (M): Swin paper Table 3 (T 60, S 81, B 121, L 234); SegDeformer paper
# Tables 1 and 7 (S 81.26, L 233.96), with the auxiliary FCN head and 150 classes.
PARAMS = {"t": 59.94, "s": 81.26, "b": 121.42, "l": 233.96}


@pytest.mark.parametrize("variant", list(PARAMS))
def test_zoo_sizes_match_the_papers(variant):
    config = model_config(f"upernet-swin-{variant}", num_classes=150)
    with torch.device("meta"):
        model = build_model(config)
    assert round(count_parameters(model)["total"] / 1e6, 2) == PARAMS[variant]
    assert config.encoder_config.window_size == (7 if variant in "ts" else 12)
    assert config.encoder_config.drop_path_rate == 0.3 and config.decoder_config.channels == 512
    assert config.mean == (123.675, 116.28, 103.53)
    assert model_config_from_json(config.to_json()) == config


def test_cli_info_works_for_upernet_swin():
    from click.testing import CliRunner

    from transeg.cli import cli

    result = CliRunner().invoke(cli, ["info", "upernet-swin-t", "--num-classes", "150", "--size", "512", "512",
                                      "--json"])
    assert result.exit_code == 0, result.output
    import json

    stats = json.loads(result.output)
    assert round(stats["params"]["total"] / 1e6) == 60
    # Swin paper Table 3: UperNet Swin-T 945 GFLOPs (MACs) at 512x2048, i.e. about 236 at 512x512
    assert stats["gmacs"] == pytest.approx(945 / 4, rel=0.01)
