"""The pre-norm transformer block of ViT and of Segmenter's mask transformer."""

from __future__ import annotations

import torch
from torch import nn

from transeg.models.layers.attention import SelfAttention
from transeg.models.layers.drop import DropPath
from transeg.models.layers.feedforward import FeedForward


class TransformerBlock(nn.Module):
    """Pre-norm transformer block (also the mask transformer's). (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, drop_path: float, eps: float,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = FeedForward(dim, dim * mlp_ratio, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
