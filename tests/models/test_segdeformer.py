"""SegDeformer: the attention math of both modes against direct recomputations, the paper's ablation
switches, the auxiliary attention loss in training, the official checkpoint key map, export, sizes
against the paper and the memory of full N x N attention."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import transeg
from tests.conftest import randomize_batchnorm
from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.recipe import parse_config
from transeg.engine.train import train
from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.decoders.segdeformer import build_segdeformer
from transeg.models.decoders.segdeformer.config import SegDeformerConfig
from transeg.models.decoders.segdeformer.paper import ContextAttention, SegDeformer
from transeg.models.decoders.segdeformer.released import SegDeformerReleased
from transeg.models.encoders.mit import MiTConfig
from transeg.models.encoders.vit import ViTConfig
from transeg.models.factory import build_model, model_config_from_json

IN_CHANNELS = (8, 12, 16, 20)
C, K = 16, 5


def features(batch: int = 2, size: tuple[int, int] = (12, 10), seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    sizes = [(h, w), ((h + 1) // 2, (w + 1) // 2), ((h + 3) // 4, (w + 3) // 4), ((h + 7) // 8, (w + 7) // 8)]
    return [torch.randn(batch, c, *s, generator=gen) for c, s in zip(IN_CHANNELS, sizes, strict=True)]


def decoder(seed: int = 0, **switches) -> torch.nn.Module:
    torch.manual_seed(seed)
    module = build_segdeformer(IN_CHANNELS, K, SegDeformerConfig(channels=C, **switches)).eval()
    randomize_batchnorm(module, seed)
    return module


# --------------------------------------------------------------------------- direct recomputations
def linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return torch.einsum("...i,oi->...o", x, layer.weight) + layer.bias


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int = 1) -> torch.Tensor:
    """(B, N, C), (B, M, C), (B, M, C) -> (B, N, C): explicit scores, softmax, weighted sum per head."""
    b, n, c = q.shape
    d = c // heads
    q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, d) for t in (q, k, v))
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(d)
    return torch.einsum("bhnm,bmhd->bnhd", scores.softmax(dim=-1), v).reshape(b, n, c)


def ref_attention(att, query: torch.Tensor, source: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if att.reduction is not None:
        grid = source.transpose(1, 2).reshape(source.shape[0], -1, *size)
        reduced = F.conv2d(grid, att.sr.weight, att.sr.bias, stride=att.reduction).flatten(2).transpose(1, 2)
        source = F.layer_norm(reduced, (reduced.shape[-1],), att.norm.weight, att.norm.bias, att.norm.eps)
    return softmax_attention(linear(query, att.q), linear(source, att.k), linear(source, att.v), att.heads)


def x_inter(module: SegDeformer, feats: list[torch.Tensor]) -> tuple[torch.Tensor, tuple[int, int]]:
    fused = module.fusion.fused_features(feats)
    return fused.flatten(2).transpose(1, 2), (fused.shape[2], fused.shape[3])


def ref_paper(module: SegDeformer, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eqs. 3-7 and 10 written out: logits and Attn_mid as a map."""
    x, size = x_inter(module, feats)
    f_aug, attn_mid = x, None
    if module.internal is not None:
        f_aug = f_aug + ref_attention(module.internal.layers[0], x, x, size)
    ext = module.external
    if ext is not None:
        tokens = ext.tokens
        info, cls = (tokens[:, :C], tokens[:, C:]) if ext.decoupled else (tokens, tokens)  # Eq. 10
        q, k, v = linear(x, ext.q_mid), linear(cls, ext.k_mid), linear(info, ext.v_mid)
        attn_mid = torch.einsum("bnc,kc->bnk", q, k) / math.sqrt(C)  # Eq. 6
        x_mid = attn_mid.softmax(dim=-1) @ v
        f_aug = f_aug + (ref_attention(ext.exter, x, x_mid, size) if ext.exter is not None else x_mid)  # Eq. 7
        attn_mid = attn_mid.transpose(1, 2).reshape(x.shape[0], K, *size)
    grid = f_aug.transpose(1, 2).reshape(x.shape[0], C, *size)
    classifier = module.fusion.classifier
    return F.conv2d(grid, classifier.weight, classifier.bias), attn_mid


def conv_bn_relu(m, x: torch.Tensor) -> torch.Tensor:
    bn = m.bn
    y = F.conv2d(x, m.conv.weight)
    return F.relu(F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))


def ref_self_attention_block(block, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """MMSegmentation's SelfAttentionBlock.forward, literally (matmul_norm: channels ** -0.5)."""
    b, c, h, w = query.shape
    q = conv_bn_relu(block.query, query).reshape(b, c, -1).permute(0, 2, 1)
    k = conv_bn_relu(block.key, key).reshape(b, c, -1)
    v = conv_bn_relu(block.value, key).reshape(b, c, -1).permute(0, 2, 1)
    sim = (c**-0.5 * torch.matmul(q, k)).softmax(dim=-1)
    context = torch.matmul(sim, v).permute(0, 2, 1).reshape(b, c, h, w)
    return conv_bn_relu(block.out, context)


def ref_released(module: SegDeformerReleased, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """SegDeformerHead3.forward in the official order (concat c1..c4, q over [cls; pixels])."""
    size = feats[0].shape[2:]
    outs = [F.interpolate(conv_bn_relu(p, f), size=size, mode="bilinear", align_corners=False)
            for p, f in zip(module.proj, feats, strict=True)]
    x = conv_bn_relu(module.fuse, torch.cat(outs, dim=1))
    b, c, h, w = x.shape
    joint = torch.cat([module.cls_token.expand(b, -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
    q = linear(joint, module.class_q)
    k = linear(module.cls_token.expand(b, -1, -1), module.class_k) * c**-0.5
    attn = (k @ q.transpose(-2, -1))[:, :, K:]  # drop the class columns
    aux = attn.reshape(b, K, h, w)
    x1 = ref_self_attention_block(module.internal, x, x)
    context = attn.transpose(1, 2).softmax(dim=-1) @ module.prop_token  # softmax over the classes
    x2 = ref_self_attention_block(module.external, x, context.permute(0, 2, 1).reshape(b, c, h, w))
    return F.conv2d(x + x1 + x2, module.classifier.weight, module.classifier.bias), aux


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return a.shape == b.shape and (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


# --------------------------------------------------------------------------- attention math
@pytest.mark.parametrize("heads, reduction", [(1, None), (2, None), (1, 2)])
def test_attention_module_equals_softmax_recomputation(heads, reduction):
    torch.manual_seed(0)
    att = ContextAttention(C, heads, reduction)
    torch.nn.init.normal_(att.q.bias)
    query, source = torch.randn(2, 12 * 10, C), torch.randn(2, 12 * 10, C)
    assert close(att(query, source, (12, 10)), ref_attention(att, query, source, (12, 10)))


def test_paper_mode_equals_equations():
    module = decoder()
    feats = features()
    logits, attn_mid = ref_paper(module, feats)
    assert close(module(feats), logits)
    out = module.forward_train(feats)
    assert close(out.logits, logits) and close(out.aux["attn"], attn_mid)
    assert out.aux["attn"].shape == (2, K, 12, 10)
    assert out.aux_weights == {"attn": 0.4}
    # decoupling: K_mid reads the class half (second C), V_mid the info half (first C) of each token
    assert module.external.tokens.shape == (K, 2 * C)


def test_attn_logits_are_raw_scores_not_probabilities():
    module = decoder()
    aux = module.forward_train(features()).aux["attn"]
    assert (aux < 0).any() and not torch.allclose(aux.sum(dim=1), torch.ones_like(aux[:, 0]))


def test_released_mode_equals_official_forward():
    module = decoder(mode="released")
    assert isinstance(module, SegDeformerReleased)
    feats = features()
    logits, aux = ref_released(module, feats)
    out = module.forward_train(feats)
    assert close(out.logits, logits) and close(module(feats), logits)
    assert close(out.aux["attn"], aux)  # raw class-token scores, no softmax
    assert out.aux_weights == {"attn": 0.4} and out.aux["attn"].shape == (2, K, 12, 10)
    assert not torch.allclose(aux.sum(dim=1), torch.ones_like(aux[:, 0]), atol=1e-2)  # not probabilities
    module.fused_projection = False  # the literal concat-then-fuse order
    assert close(module(feats), logits)


def test_released_mode_rejects_paper_switches():
    with pytest.raises(TransegError, match="paper-mode switches"):
        SegDeformerConfig(mode="released", internal=False)
    with pytest.raises(TransegError, match="token_update"):
        SegDeformerConfig(token_update="ema")


def test_segmentor_forward_train_returns_attn_at_one_quarter():
    torch.manual_seed(0)
    model = transeg.create_model("segdeformer-mit-b0", num_classes=4)
    out = model.forward_train(torch.randn(1, 3, 64, 96))
    assert out.logits.shape == (1, 4, 16, 24) and out.aux["attn"].shape == (1, 4, 16, 24)
    assert out.aux_weights["attn"] == 0.4


# --------------------------------------------------------------------------- the paper's switches
def params(module: torch.nn.Module) -> set[str]:
    return {n for n, _ in module.named_parameters()}


def test_internal_only_is_x_plus_y_inter_and_has_no_external_parameters():
    module = decoder(external=False)
    assert module.external is None and not any("tokens" in n or "mid" in n for n in params(module))
    feats = features()
    x, size = x_inter(module, feats)
    f_aug = x + ref_attention(module.internal.layers[0], x, x, size)
    grid = f_aug.transpose(1, 2).reshape(2, C, *size)
    expected = F.conv2d(grid, module.fusion.classifier.weight, module.fusion.classifier.bias)
    assert close(module(feats), expected)
    assert module.forward_train(feats).aux == {}  # no mid map, no L_attn


def test_external_only_has_no_internal_parameters():
    module = decoder(internal=False)
    assert module.internal is None and not any(n.startswith("internal") for n in params(module))
    assert close(module(features()), ref_paper(module, features())[0])


def test_neither_is_segformer():
    module = decoder(internal=False, external=False)
    feats = features()
    assert params(module) == {f"fusion.{n}" for n in params(module.fusion)}
    assert close(module(feats), module.fusion(feats))


def test_without_decoupling_one_token_set_gives_keys_and_values():
    module = decoder(decoupled=False)
    assert module.external.tokens.shape == (K, C)
    assert close(module(features()), ref_paper(module, features())[0])


def test_without_attn_loss_no_aux():
    module = decoder(attn_loss=False)
    out = module.forward_train(features())
    assert out.aux == {} and out.aux_weights == {}
    assert close(out.logits, decoder()(features()))  # the same network otherwise


def test_without_y_exter_x_mid_is_added_directly():
    module = decoder(y_exter=False)
    assert module.external.exter is None
    assert close(module(features()), ref_paper(module, features())[0])


def test_mlp_after_internal_adds_a_residual_ffn():
    module = decoder(mlp_after_internal=True)
    feats = features()
    x, size = x_inter(module, feats)
    z = ref_attention(module.internal.layers[0], x, x, size)
    ffn = module.internal.mlps[0]
    y_inter = z + linear(F.gelu(linear(F.layer_norm(z, (C,), ffn.norm.weight, ffn.norm.bias), ffn.fc1)), ffn.fc2)
    without = decoder(internal=False)
    without.load_state_dict({k: v for k, v in module.state_dict().items() if not k.startswith("internal")})
    expected = without(feats) + F.conv2d(y_inter.transpose(1, 2).reshape(2, C, *size),
                                         module.fusion.classifier.weight)
    assert close(module(feats), expected)


def test_depth_and_heads_of_the_internal_module():
    module = decoder(internal_depth=2, internal_heads=2, external=False)
    feats = features()
    x, size = x_inter(module, feats)
    first = ref_attention(module.internal.layers[0], x, x, size)
    second = ref_attention(module.internal.layers[1], x + first, x + first, size)
    assert close(module.internal(x, size), first + second)


def test_efficient_attention_shortens_keys_and_values():
    module = decoder(efficient_ratio=2)
    assert module.internal.layers[0].sr.stride == (2, 2) and module.external.exter.sr.kernel_size == (2, 2)
    assert close(module(features()), ref_paper(module, features())[0])
    assert not close(module(features()), decoder()(features()))


def test_momentum_tokens_are_buffers_updated_in_training_only():
    """The memory's update rule itself: tests/models/test_segdeformer_memory.py."""
    for decoupled in (True, False):
        module = decoder(token_update="momentum", decoupled=decoupled)
        ext = module.external
        assert {"external.memory.tokens", "external.memory.steps"} <= set(dict(module.named_buffers()))
        assert not any(name.startswith("external.memory") for name in params(module))
        assert ("external.class_tokens" in params(module)) == decoupled  # the class half stays learnable
        labels = torch.randint(0, K, (2, 12, 10))
        module(features())
        module.forward_train(features(), labels)
        assert not ext.memory.tokens.any() and int(ext.memory.steps) == 0  # eval: no update
        module.train()
        with pytest.raises(TransegError, match="forward_train\\(features, labels\\)"):
            module.forward_train(features())
        out = module.forward_train(features(), labels)
        out.logits.sum().backward()  # the in-place update leaves the autograd graph intact
        assert ext.memory.tokens.abs().sum(dim=1).gt(0).sum() == len(labels.unique())
        assert int(ext.memory.steps) == 1


def test_uper_fusion_uses_upernet_and_its_auxiliary_head():
    module = decoder(fusion="uper", uper_aux_channels=8)
    assert type(module.fusion).__name__ == "UperNetFusion"
    out = module.forward_train(features())
    assert set(out.aux) == {"attn", "aux"} and out.aux_weights == {"attn": 0.4, "aux": 0.4}
    assert out.logits.shape == (2, K, 12, 10)
    assert module(features()).shape == (2, K, 12, 10)


def test_vit_encoder_gives_four_maps_at_one_sixteenth():
    vit = ViTConfig(patch_size=16, embed_dim=32, depth=4, heads=2, image_size=64, out_indices=(0, 1, 2, 3))
    config = ModelConfig(encoder="vit", encoder_config=vit, decoder="segdeformer",
                         decoder_config=SegDeformerConfig(channels=C), num_classes=K)
    model = build_model(config)
    out = model.forward_train(torch.randn(1, 3, 70, 90))
    assert out.logits.shape == (1, K, 70, 90) and out.aux["attn"].shape == (1, K, 70, 90)  # unpadded


# --------------------------------------------------------------------------- sizes against the paper
PAPER_PARAMS = {  # millions, 150 classes: Table 1 (B1, B5, †: DeiT-B, Swin-L) and Table 7
    "segdeformer-mit-b1": 14.35, "segdeformer-mit-b5": 82.65, "segdeformer-mit-b2": 25.40,
    "segdeformer-mit-b2-eff": 27.59, "segdeformer-deit-s16": 27.21, "segdeformer-deit-s16-uper": 54.48,
    "segdeformer-deit-b16-uper": 122.96, "segdeformer-swin-s": 54.02, "segdeformer-swin-s-uper": 83.65,
    "segdeformer-swin-s-uper-eff": 92.43, "segdeformer-swin-l-uper": 236.35,
    "segdeformer-mit-b1-released": 14.35, "segdeformer-mit-b2-released": 25.40,
    "segdeformer-mit-b5-released": 82.65,
}


@functools.cache
def encoder_size(name: str, config) -> tuple[int, tuple[int, ...]]:
    """Parameter count and output widths of an encoder (MiT is built on the CPU: its drop-path rates
    need tensor data; the others on 'meta')."""
    from transeg.models.factory import ENCODERS

    with torch.device("cpu" if name == "mit" else "meta"):
        encoder = ENCODERS[name][1](config)
    return sum(p.numel() for p in encoder.parameters()), tuple(encoder.out_channels)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_sizes_agree_with_the_paper(name):
    from transeg.models.zoo import model_config

    config = model_config(name, num_classes=150)
    encoder_params, widths = encoder_size(config.encoder, config.encoder_config)
    with torch.device("meta"):
        head = build_segdeformer(widths, 150, config.decoder_config)
    total = (encoder_params + sum(p.numel() for p in head.parameters())) / 1e6
    assert total == pytest.approx(PAPER_PARAMS[name], rel=0.05)


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize("name", ["segdeformer-mit-b0", "segdeformer-mit-b1-released"])
def test_training_logs_both_losses(tmp_path, name):
    root = write_synthetic_dataset(tmp_path / "scenes", num_train=4, num_val=2, size=(64, 64))
    cfg = parse_config({
        "model": {"name": name},
        "data": {"dataset": "folder", "root": str(root), "crop_size": [64, 64], "scale": [64, 64],
                 "test_scale": None, "num_workers": 0},
        "optimizer": {"lr": 1e-3}, "schedule": {"iterations": 3, "warmup_iters": 1},
        "train": {"batch_size": 2, "log_interval": 1, "eval_interval": 3, "checkpoint_interval": 3},
        "output_dir": str(tmp_path / "run"),
    })
    result = train(cfg, show_progress=False)
    assert result.iteration == 3
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 3
    for r in steps:
        assert math.isclose(r["loss"], r["loss_seg"] + 0.4 * r["loss_attn"], rel_tol=1e-4)
    model = transeg.load_model(tmp_path / "run" / "model.safetensors")
    assert model.config.decoder == "segdeformer"
    assert model.config.decoder_config == transeg.models.zoo.ZOO[name].decoder_config


# --------------------------------------------------------------------------- export
@pytest.mark.parametrize("switches", [{}, {"efficient_ratio": 2}, {"mode": "released"},
                                      {"token_update": "momentum"}])
def test_torch_export_of_the_eval_path(switches):
    torch.manual_seed(0)
    config = ModelConfig(encoder="mit", encoder_config=MiTConfig(), decoder="segdeformer",
                         decoder_config=SegDeformerConfig(channels=C, **switches), num_classes=3)
    model = build_model(config).eval()
    x = torch.randn(1, 3, 96, 128)
    exported = torch.export.export(model, (x,))
    with torch.inference_mode():
        assert close(exported.module()(x), model(x))


# --------------------------------------------------------------------------- memory
# Peak resident memory of one eval forward of segdeformer-mit-b0 (paper mode, C = 256, 150 classes) on
# a 1x3x512x512 input, above the resident size right before it (2 CPU threads, torch 2.13): measured
# 195 MiB with full N x N attention through SDPA (N = 128^2 = 16,384: the score matrix alone would be
# 1 GiB; an explicit softmax(QK^T)V implementation grows by 2,264 MiB), 127 MiB with efficient attention
# (R = 4). SegFormer-B0 alone: 104 MiB.
MEMORY_LIMIT_MIB = {None: 450, 4: 300}
_MEMORY_SCRIPT = """
import dataclasses, resource, sys, torch
from transeg.models.factory import build_model
from transeg.models.zoo import model_config
torch.set_num_threads(2)
ratio = None if sys.argv[1] == "none" else int(sys.argv[1])
cfg = model_config("segdeformer-mit-b0", num_classes=150)
cfg = dataclasses.replace(cfg, decoder_config=dataclasses.replace(cfg.decoder_config, efficient_ratio=ratio))
model = build_model(cfg).eval()
x = torch.randn(1, 3, 512, 512)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.inference_mode():
    assert model(x).shape == (1, 150, 128, 128)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


@pytest.mark.parametrize("ratio", [None, 4])
def test_peak_memory_of_a_512_forward(ratio):
    run = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(ratio).lower()], capture_output=True,
                         text=True, cwd=Path(__file__).parent)
    assert run.returncode == 0, run.stderr
    growth_mib = float(run.stdout.split()[-1])
    assert growth_mib < MEMORY_LIMIT_MIB[ratio], f"{growth_mib:.0f} MiB"


def test_segdeformer_is_registered():
    assert {"segdeformer-mit-b1", "segdeformer-mit-b1-released", "segdeformer-mit-b2-eff",
            "segdeformer-deit-s16", "segdeformer-swin-s-uper"} <= set(transeg.list_models())
    cfg = transeg.create_model("segdeformer-mit-b0", num_classes=2).config
    assert model_config_from_json(cfg.to_json()) == cfg
    assert dataclasses.asdict(cfg.decoder_config)["mode"] == "paper"


# --------------------------------------------------------------------------- Eq. 7 through the tokens
def test_mixture_attention_equals_attention_over_the_mixed_source():
    torch.manual_seed(0)
    att = ContextAttention(C, 1)
    torch.nn.init.normal_(att.q.bias), torch.nn.init.normal_(att.k.bias), torch.nn.init.normal_(att.v.bias)
    query, tokens = torch.randn(2, 12 * 10, C), torch.randn(K, C)
    weights = torch.randn(2, 12 * 10, K).softmax(dim=-1)
    expected = ref_attention(att, query, weights @ tokens, (12, 10))
    assert close(att.forward_mixture(query, weights, tokens), expected)


def _loss_and_grads(module: SegDeformer, feats: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    module.zero_grad()
    out = module.forward_train(feats)
    loss = out.logits.square().mean() + out.aux["attn"].square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("switches", [{}, {"decoupled": False}, {"internal": False}])
def test_factored_external_attention_equals_the_literal_order_with_gradients(switches):
    """Eq. 7 through the N_cls tokens (the default) against K_ext, V_ext of X_mid: outputs, loss and
    every parameter's gradient (K = 5 < C = 16)."""
    module = decoder(**switches).train()
    module.fusion.dropout.p = 0.0
    with torch.no_grad():  # weights large enough for peaked softmaxes (the init's are near uniform)
        for p in module.external.parameters():
            p.normal_(0.0, 2.0 if p.dim() < 2 else 2.0 * C**-0.5)
    feats = features()
    assert module.external.factored
    calls = []
    mixture = module.external.exter.forward_mixture
    module.external.exter.forward_mixture = lambda *args: calls.append(1) or mixture(*args)
    loss, grads = _loss_and_grads(module, feats)
    assert calls == [1]  # the factored path ran
    module.external.factored = False
    ref_loss, ref_grads = _loss_and_grads(module, feats)
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    scale = max(g.abs().max().item() for g in ref_grads.values())
    for name, grad in ref_grads.items():
        assert (grads[name] - grad).abs().max().item() <= 1e-5 * scale, name
