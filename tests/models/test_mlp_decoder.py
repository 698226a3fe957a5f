"""The All-MLP decoder's composed projections compute the paper's literal form, forward and backward."""

from __future__ import annotations

import torch

from tests.conftest import randomize_batchnorm
from transeg.models.decoders.mlp import MLPDecoder, MLPDecoderConfig


def features(batch: int = 2, size: tuple[int, int] = (24, 34)) -> list[torch.Tensor]:
    h, w = size
    shapes = [(32, h, w), (64, (h + 1) // 2, (w + 1) // 2), (160, (h + 3) // 4, (w + 3) // 4),
              (256, (h + 7) // 8, (w + 7) // 8)]
    return [torch.randn(batch, *s, requires_grad=True) for s in shapes]


def test_composed_equals_literal_in_eval():
    torch.manual_seed(0)
    decoder = MLPDecoder((32, 64, 160, 256), 7, MLPDecoderConfig(embed_dim=64)).eval()
    for proj in decoder.proj:
        torch.nn.init.normal_(proj.bias)
    randomize_batchnorm(decoder)
    xs = features()
    decoder.fused_projection = False
    literal = decoder(xs)
    decoder.fused_projection = True
    composed = decoder(xs)
    assert composed.shape == (2, 7, 24, 34)
    assert (composed - literal).abs().max() < 1e-5


def test_composed_gradients_equal_literal():
    torch.manual_seed(1)
    decoder = MLPDecoder((32, 64, 160, 256), 5, MLPDecoderConfig(embed_dim=48, dropout=0.0)).train()
    xs = features(size=(17, 23))
    grads = []
    for fused in (False, True):
        decoder.fused_projection = fused
        decoder.zero_grad()
        for x in xs:
            x.grad = None
        decoder(xs).square().mean().backward()
        grads.append([p.grad.clone() for p in decoder.parameters()] + [x.grad.clone() for x in xs])
    for literal, composed in zip(*grads, strict=True):
        assert torch.allclose(literal, composed, atol=1e-6, rtol=1e-4)
