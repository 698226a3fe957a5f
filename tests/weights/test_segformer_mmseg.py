"""Checkpoints of MMSegmentation's model zoo for SegFormer (0.x and 1.x): MiT in MMSegmentation's layout
and its ``SegformerHead``. The checkpoints are written here key by key in that layout (random weights,
non-trivial BatchNorm statistics), and the reference forward is MMSegmentation's MiT and SegformerHead
written out on those tensors, independently of transeg's modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import transeg
from transeg.errors import TransegError
from transeg.weights.load import CHECKPOINT_FORMATS
from transeg.weights.segdeformer import transeg_to_official as segdeformer_to_official
from transeg.weights.segformer import save_hf_pretrained

# MiT-B0 (MMSegmentation's segformer_mit-b0 config: embed_dims 32, num_heads [1, 2, 5, 8], num_layers
# [2, 2, 2, 2], sr_ratios [8, 4, 2, 1], patch_sizes [7, 3, 3, 3], strides [4, 2, 2, 2], mlp_ratio 4),
# SegformerHead channels 256, 150 classes.
WIDTHS, DEPTHS, HEADS, SR, PATCH, STRIDE = (32, 64, 160, 256), (2, 2, 2, 2), (1, 2, 5, 8), (8, 4, 2, 1), \
    (7, 3, 3, 3), (4, 2, 2, 2)
CHANNELS, CLASSES, EPS = 256, 150, 1e-6


def _mmseg_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A MMSegmentation SegFormer-B0 ``state_dict``, key by key as ``mit.py`` and ``segformer_head.py``
    name them (float64)."""
    gen = torch.Generator().manual_seed(seed)

    def w(*shape: int, scale: float | None = None) -> torch.Tensor:
        fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
        std = scale if scale is not None else fan_in**-0.5
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    def norm(prefix: str, dim: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1 + w(dim, scale=0.1), f"{prefix}.bias": w(dim, scale=0.1)}

    def bn(prefix: str, dim: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1 + w(dim, scale=0.2), f"{prefix}.bias": w(dim, scale=0.2),
                f"{prefix}.running_mean": w(dim, scale=0.3),
                f"{prefix}.running_var": torch.rand(dim, generator=gen, dtype=torch.float64) + 0.5,
                f"{prefix}.num_batches_tracked": torch.tensor(1000)}

    state: dict[str, torch.Tensor] = {}
    in_ch = 3
    for i, (c, depth, sr, k) in enumerate(zip(WIDTHS, DEPTHS, SR, PATCH, strict=True)):
        p = f"backbone.layers.{i}"
        state |= {f"{p}.0.projection.weight": w(c, in_ch, k, k), f"{p}.0.projection.bias": w(c, scale=0.1)}
        state |= norm(f"{p}.0.norm", c)
        for j in range(depth):
            b = f"{p}.1.{j}"
            state |= norm(f"{b}.norm1", c)
            state |= {f"{b}.attn.attn.in_proj_weight": w(3 * c, c), f"{b}.attn.attn.in_proj_bias": w(3 * c, scale=0.1),
                      f"{b}.attn.attn.out_proj.weight": w(c, c), f"{b}.attn.attn.out_proj.bias": w(c, scale=0.1)}
            if sr > 1:
                state |= {f"{b}.attn.sr.weight": w(c, c, sr, sr), f"{b}.attn.sr.bias": w(c, scale=0.1)}
                state |= norm(f"{b}.attn.norm", c)
            state |= norm(f"{b}.norm2", c)
            state |= {f"{b}.ffn.layers.0.weight": w(4 * c, c, 1, 1), f"{b}.ffn.layers.0.bias": w(4 * c, scale=0.1),
                      f"{b}.ffn.layers.1.weight": w(4 * c, 1, 3, 3), f"{b}.ffn.layers.1.bias": w(4 * c, scale=0.1),
                      f"{b}.ffn.layers.4.weight": w(c, 4 * c, 1, 1), f"{b}.ffn.layers.4.bias": w(c, scale=0.1)}
        state |= norm(f"{p}.2", c)
        in_ch = c
    for i, c in enumerate(WIDTHS):
        state[f"decode_head.convs.{i}.conv.weight"] = w(CHANNELS, c, 1, 1)
        state |= bn(f"decode_head.convs.{i}.bn", CHANNELS)
    state["decode_head.fusion_conv.conv.weight"] = w(CHANNELS, 4 * CHANNELS, 1, 1)
    state |= bn("decode_head.fusion_conv.bn", CHANNELS)
    state |= {"decode_head.conv_seg.weight": w(CLASSES, CHANNELS, 1, 1),
              "decode_head.conv_seg.bias": w(CLASSES, scale=0.1)}
    return state


def _mmseg_mit(sd: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """``MixVisionTransformer.forward`` (eval), on the ``backbone.*`` tensors: (B, 3, H, W) -> 4 maps."""
    outs = []
    for i, (c, depth, heads, sr, k, s) in enumerate(zip(WIDTHS, DEPTHS, HEADS, SR, PATCH, STRIDE, strict=True)):
        p = f"backbone.layers.{i}"
        x = F.conv2d(x, sd[f"{p}.0.projection.weight"], sd[f"{p}.0.projection.bias"], stride=s, padding=k // 2)
        h, w = x.shape[2:]
        x = F.layer_norm(x.flatten(2).transpose(1, 2), (c,), sd[f"{p}.0.norm.weight"], sd[f"{p}.0.norm.bias"], EPS)
        for j in range(depth):
            b = f"{p}.1.{j}"
            y = F.layer_norm(x, (c,), sd[f"{b}.norm1.weight"], sd[f"{b}.norm1.bias"], EPS)
            kv = y
            if sr > 1:
                kv = F.conv2d(y.transpose(1, 2).reshape(-1, c, h, w), sd[f"{b}.attn.sr.weight"],
                              sd[f"{b}.attn.sr.bias"], stride=sr).flatten(2).transpose(1, 2)
                kv = F.layer_norm(kv, (c,), sd[f"{b}.attn.norm.weight"], sd[f"{b}.attn.norm.bias"], EPS)
            attn, _ = F.multi_head_attention_forward(  # nn.MultiheadAttention, sequence first
                y.transpose(0, 1), kv.transpose(0, 1), kv.transpose(0, 1), c, heads,
                sd[f"{b}.attn.attn.in_proj_weight"], sd[f"{b}.attn.attn.in_proj_bias"], None, None, False, 0.0,
                sd[f"{b}.attn.attn.out_proj.weight"], sd[f"{b}.attn.attn.out_proj.bias"],
                training=False, need_weights=False)
            x = x + attn.transpose(0, 1)
            y = F.layer_norm(x, (c,), sd[f"{b}.norm2.weight"], sd[f"{b}.norm2.bias"], EPS)
            y = y.transpose(1, 2).reshape(-1, c, h, w)
            y = F.conv2d(y, sd[f"{b}.ffn.layers.0.weight"], sd[f"{b}.ffn.layers.0.bias"])
            y = F.conv2d(y, sd[f"{b}.ffn.layers.1.weight"], sd[f"{b}.ffn.layers.1.bias"], padding=1, groups=4 * c)
            y = F.conv2d(F.gelu(y), sd[f"{b}.ffn.layers.4.weight"], sd[f"{b}.ffn.layers.4.bias"])
            x = x + y.flatten(2).transpose(1, 2)
        x = F.layer_norm(x, (c,), sd[f"{p}.2.weight"], sd[f"{p}.2.bias"], EPS)
        x = x.transpose(1, 2).reshape(-1, c, h, w)
        outs.append(x)
    return outs


def _conv_module(sd: dict[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    """mmcv ConvModule (1x1 conv without bias, BN in eval mode, ReLU)."""
    x = F.conv2d(x, sd[f"{prefix}.conv.weight"])
    x = F.batch_norm(x, sd[f"{prefix}.bn.running_mean"], sd[f"{prefix}.bn.running_var"],
                     sd[f"{prefix}.bn.weight"], sd[f"{prefix}.bn.bias"], training=False, eps=1e-5)
    return F.relu(x)


def _segformer_head(sd: dict[str, torch.Tensor], inputs: list[torch.Tensor]) -> torch.Tensor:
    """``SegformerHead.forward`` (eval: dropout is the identity), on the ``decode_head.*`` tensors."""
    outs = [F.interpolate(_conv_module(sd, f"decode_head.convs.{i}", x), size=inputs[0].shape[2:],
                          mode="bilinear", align_corners=False) for i, x in enumerate(inputs)]
    out = _conv_module(sd, "decode_head.fusion_conv", torch.cat(outs, dim=1))
    return F.conv2d(out, sd["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.bias"])


@pytest.fixture(scope="module")
def mmseg_state():
    return _mmseg_state()


# MMSegmentation 0.x (mmcv runner) and 1.x (mmengine) model-zoo files: ``meta`` beside ``state_dict``.
WRAPPERS = {
    "0.x": lambda sd: {"meta": {"CLASSES": tuple(f"c{i}" for i in range(CLASSES)), "PALETTE": [[0, 0, 0]] * CLASSES,
                                "mmseg_version": "0.29.1", "iter": 160000, "config": "model = dict(...)"},
                       "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}},
    "1.x": lambda sd: {"meta": {"dataset_meta": {"classes": tuple(f"c{i}" for i in range(CLASSES))},
                                "mmseg_version": "1.2.2", "iter": 160000, "cfg": "model = dict(...)"},
                       "state_dict": sd},
}


@pytest.mark.parametrize("layout", list(WRAPPERS))
def test_loads_with_parity_to_mmsegmentation(mmseg_state, tmp_path, layout):
    path = tmp_path / "segformer_mit-b0_512x512_160k_ade20k.pth"
    torch.save(WRAPPERS[layout]({k: v.float() for k, v in mmseg_state.items()}), path)
    model = transeg.load_model(path)
    assert model.config.name == "segformer-mmseg-b0" and model.config.decoder == "mmseg_mlp"
    assert model.config.encoder_config.norm_eps == model.config.encoder_config.embed_norm_eps == EPS
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = _segformer_head(mmseg_state, _mmseg_mit(mmseg_state, x))
    model = model.double()
    for composed in (True, False):
        model.decoder.fused_projection = composed
        with torch.no_grad():
            got = model(x)
        assert got.shape == (1, CLASSES, 16, 24)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_float32_parity(mmseg_state, tmp_path):
    path = tmp_path / "b0.pth"
    torch.save({"state_dict": {k: v.float() for k, v in mmseg_state.items()}}, path)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = _segformer_head(mmseg_state, _mmseg_mit(mmseg_state, x)).float()
    with torch.no_grad():
        got = transeg.load_model(path)(x.float())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_official_mit_names_with_mmseg_head(tmp_path):
    """The head beside an official-named MiT (``block{s}.{j}.attn.q``) loads too, with its eps."""
    model = transeg.create_model("segformer-mmseg-b0", num_classes=4)
    state = segdeformer_to_official(
        {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}, backbone="official")
    state |= {k.replace("decoder.proj.", "decode_head.convs.").replace("decoder.fuse.", "decode_head.fusion_conv.")
              .replace("decoder.classifier.", "decode_head.conv_seg."): v
              for k, v in model.state_dict().items() if k.startswith("decoder.")}
    path = tmp_path / "official-names.pth"
    torch.save({"state_dict": state}, path)
    loaded = transeg.load_model(path)
    assert loaded.config.encoder_config.embed_norm_eps == 1e-5  # the official MiT's
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_format_order_leaves_official_segformer_and_segdeformer_alone(mmseg_state):
    """The first format to recognise each kind of checkpoint is its own."""
    official = {k: torch.zeros(1) for k in ("backbone.patch_embed1.proj.weight", "decode_head.linear_c1.proj.weight",
                                            "decode_head.linear_fuse.conv.weight")}
    segdeformer = segdeformer_to_official(transeg.create_model("segdeformer-mit-b1-released", 3).state_dict())

    def first(state):
        return next(f.name for f in CHECKPOINT_FORMATS if f.recognise(state))

    assert first(mmseg_state) == "MMSegmentation model-zoo SegFormer (0.x, 1.x)"
    assert first(official) == "official SegFormer (NVlabs)"
    assert first(segdeformer) == "official SegDeformer"


def test_unknown_key_is_named(mmseg_state, tmp_path):
    path = tmp_path / "extra.pth"
    torch.save({"state_dict": {**mmseg_state, "decode_head.conv_seg_extra.weight": torch.zeros(1)}}, path)
    with pytest.raises(TransegError, match=r"decode_head\.conv_seg_extra\.weight"):
        transeg.load_model(path)
    torch.save({"state_dict": {**mmseg_state, "auxiliary_head.conv.weight": torch.zeros(1)}}, path)
    with pytest.raises(TransegError, match=r"auxiliary_head\.conv\.weight"):
        transeg.load_model(path)


def test_convert_to_transeg_and_not_to_transformers(mmseg_state, tmp_path):
    path = tmp_path / "b0.pth"
    torch.save({"state_dict": {k: v.float() for k, v in mmseg_state.items()}}, path)
    model = transeg.load_model(path)
    saved = transeg.save_model(model, tmp_path / "b0.safetensors")
    again = transeg.load_model(saved)
    assert again.config == model.config
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    with pytest.raises(TransegError, match="segformer-mmseg-b0: MMSegmentation's SegformerHead .* no transformers"):
        save_hf_pretrained(model, tmp_path / "hf")
    assert not (tmp_path / "hf" / "model.safetensors").exists()


class HistoryBuffer:
    """Stands for mmengine's logging objects, which 1.x training checkpoints pickle beside the weights."""

    def __init__(self) -> None:
        self.values = [1.0]


def test_mmengine_training_checkpoint_is_refused_in_one_line(mmseg_state, tmp_path):
    path = tmp_path / "iter_160000.pth"
    torch.save({**WRAPPERS["1.x"](mmseg_state), "message_hub": {"log_scalars": {"loss": HistoryBuffer()}}}, path)
    with pytest.raises(TransegError, match=rf"^{path}: cannot read checkpoint safely \(") as error:
        transeg.load_model(path)
    assert "\n" not in str(error.value)
