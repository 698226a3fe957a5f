"""``attention``: SDPA in fp32; under CPU bf16 autocast, explicit bf16 products within bf16's rounding."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from transeg.models.layers import attention as attention_module
from transeg.models.layers.attention import attention


def qkv(n: int = 97, m: int = 53, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(2, 3, n, 16), (2, 3, m, 16), (2, 3, m, 16)]
    return [(2 * torch.randn(*s, generator=generator)).requires_grad_() for s in shapes]


def output_and_grads(fn, tensors, bf16: bool):
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        out = fn(*tensors)
    out.float().sum().backward()
    return [out.detach().float()] + [t.grad.float() for t in tensors]


def test_fp32_is_sdpa_itself():
    tensors, twins = qkv(), qkv()
    got = output_and_grads(attention, tensors, bf16=False)
    want = output_and_grads(F.scaled_dot_product_attention, twins, bf16=False)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_bf16_takes_the_explicit_path_within_bf16_rounding():
    reference = output_and_grads(F.scaled_dot_product_attention, qkv(), bf16=False)
    bf16_inputs = [t.detach().bfloat16().requires_grad_() for t in qkv()]  # as a Linear gives them under autocast
    with mock.patch.object(attention_module.F, "scaled_dot_product_attention", side_effect=AssertionError("SDPA")):
        got = output_and_grads(attention, bf16_inputs, bf16=True)
    for g, r in zip(got, reference, strict=True):
        scale = r.abs().mean()
        assert (g - r).abs().mean() < 0.02 * scale  # bf16 keeps 8 bits: 0.4% per rounding
        assert (g - r).abs().max() < 0.25 * r.abs().max()


def test_large_attentions_stay_on_sdpa(monkeypatch):
    monkeypatch.setattr(attention_module, "EXPLICIT_BF16_MAX_WEIGHTS", 2 * 3 * 97 * 53 - 1)
    calls = []
    real = F.scaled_dot_product_attention
    with mock.patch.object(attention_module.F, "scaled_dot_product_attention",
                           side_effect=lambda *a, **k: calls.append(1) or real(*a, **k)):
        output_and_grads(attention, qkv(), bf16=True)
    assert calls == [1]


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_dropout_only_when_asked(p):
    torch.manual_seed(3)
    q, k, v = (t.detach() for t in qkv())
    with torch.autocast("cpu", torch.bfloat16):
        first = attention(q, k, v, p)
        second = attention(q, k, v, p)
    assert torch.equal(first, second) == (p == 0.0)
