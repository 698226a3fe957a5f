"""Segmenter's linear decoder: one Linear(D, K) applied to every patch embedding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from transeg.models.decoders.base import Decoder


@dataclass(frozen=True)
class LinearDecoderConfig:
    """The linear decoder has no settings; its width is the encoder's and its output the classes."""


class LinearDecoder(Decoder):
    """[..., (B, D, h, w)] -> logits (B, K, h, w), from the last feature map."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, cfg: LinearDecoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.head = nn.Linear(in_channels[-1], num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        return self.head(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
