"""SegDeformer (Shi et al., ECCV 2022) heads: ``paper`` (Eqs. 1-10, with the ablation switches) and
``released`` (the authors' ``SegDeformerHead3``); ``SegDeformerConfig.mode`` chooses."""

from __future__ import annotations

from collections.abc import Sequence

from transeg.models.decoders.base import Decoder
from transeg.models.decoders.segdeformer.config import SegDeformerConfig
from transeg.models.decoders.segdeformer.paper import SegDeformer
from transeg.models.decoders.segdeformer.released import SegDeformerReleased


def build_segdeformer(in_channels: Sequence[int], num_classes: int, cfg: SegDeformerConfig) -> Decoder:
    """The head of ``cfg.mode``: [(B, C_i, H_i, W_i)] -> logits (B, K, H_0, W_0)."""
    head = SegDeformerReleased if cfg.mode == "released" else SegDeformer
    return head(in_channels, num_classes, cfg)
