"""The All-MLP decoder of SegFormer.

Each stage is projected to C channels by a Linear (no norm, no activation), upsampled to the
1/4 map, concatenated deepest first, fused by a 1x1 conv (no bias) + BatchNorm + ReLU, then
Dropout2d and a 1x1 classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MLPDecoderConfig:
    embed_dim: int = 256
    dropout: float = 0.1


class MLPDecoder(nn.Module):
    """[(B, C_i, H_i, W_i)] -> logits (B, K, H_0, W_0)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, cfg: MLPDecoderConfig) -> None:
        super().__init__()
        self.config = cfg
        e = cfg.embed_dim
        self.proj = nn.ModuleList(nn.Linear(c, e) for c in in_channels)
        self.fuse = nn.Conv2d(e * len(in_channels), e, 1, bias=False)
        self.norm = nn.BatchNorm2d(e)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.classifier = nn.Conv2d(e, num_classes, 1)
        for proj in self.proj:
            nn.init.trunc_normal_(proj.weight, std=0.02)
            nn.init.zeros_(proj.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        projected = []
        for i, (x, proj) in enumerate(zip(features, self.proj, strict=True)):
            # A Linear over channels is a 1x1 conv; this form avoids two transposes.
            x = F.conv2d(x, proj.weight[:, :, None, None], proj.bias)
            if i > 0:  # decided by position, not by shape, so that export sees no shape test
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            projected.append(x)
        x = self.fuse(torch.cat(projected[::-1], dim=1))
        x = self.dropout(self.act(self.norm(x)))
        return self.classifier(x)
