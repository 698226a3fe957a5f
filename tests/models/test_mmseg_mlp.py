"""MMSegmentation's SegformerHead (the ``mmseg_mlp`` decoder): its composed fusion against the literal
order, in eval and train mode, and the released SegDeformer head's fusion, which is the same."""

from __future__ import annotations

import torch

from tests.conftest import randomize_batchnorm
from transeg.models.decoders.mmseg_mlp import SegformerHead, SegformerHeadConfig, segformer_head_fusion
from transeg.models.decoders.segdeformer.config import SegDeformerConfig
from transeg.models.decoders.segdeformer.released import SegDeformerReleased

CHANNELS = (8, 16, 24, 32)


def _features(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, 20 // 2**i, 28 // 2**i, generator=gen, dtype=torch.float64)
            for i, c in enumerate(CHANNELS)]


def test_composed_fusion_equals_the_literal_order():
    torch.manual_seed(0)
    head = SegformerHead(CHANNELS, 5, SegformerHeadConfig(channels=12)).double().eval()
    randomize_batchnorm(head)
    feats = _features()
    composed = head(feats)
    head.fused_projection = False
    literal = head(feats)
    assert composed.shape == (2, 5, 20, 28)
    torch.testing.assert_close(composed, literal, rtol=0, atol=1e-12)


def test_train_mode_gradients_match_the_literal_order():
    torch.manual_seed(0)
    head = SegformerHead(CHANNELS, 5, SegformerHeadConfig(channels=12, dropout=0.0)).double().train()
    grads = []
    for composed in (True, False):
        head.zero_grad()
        head.fused_projection = composed
        head(_features()).square().sum().backward()
        grads.append([p.grad.clone() for p in head.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert all(g.abs().sum() > 0 for g in grads[0])


def test_released_segdeformer_fuses_as_segformer_head():
    torch.manual_seed(0)
    released = SegDeformerReleased(CHANNELS, 5, SegDeformerConfig(mode="released", channels=12)).double().eval()
    randomize_batchnorm(released)
    feats = _features(1)
    head_literal = segformer_head_fusion(released.proj, released.fuse, feats, composed=False)
    torch.testing.assert_close(released.fused_map(feats), head_literal, rtol=0, atol=1e-12)
