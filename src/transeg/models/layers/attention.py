"""Multi-head self-attention with one fused qkv projection, through SDPA (or, under CPU bf16
autocast, explicit bf16 products)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cpu_bf16_autocast() -> bool:
    """Whether CPU autocast to bfloat16 is on."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


# the most attention weights (B x H x N x M) the explicit bf16 path holds: 128 MB in bf16
EXPLICIT_BF16_MAX_WEIGHTS = 2**26


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q kᵀ / √d) v over (B, H, N, d) queries and (B, H, M, d) keys and values, dropout on
    the weights -> (B, H, N, d).

    Through ``F.scaled_dot_product_attention``, except on CPU tensors under bf16 autocast with at most
    ``EXPLICIT_BF16_MAX_WEIGHTS`` weights: PyTorch's CPU flash kernel gains nothing from bf16, and the
    explicit products in bf16 (the weights held for the backward) are 1.3x faster forward and
    backward at ViT-T/16's 691 tokens (``benchmarks/attention_bf16.py``), within bf16's rounding."""
    b, h, n, _ = q.shape
    if q.device.type == "cpu" and cpu_bf16_autocast() and b * h * n * k.shape[-2] <= EXPLICIT_BF16_MAX_WEIGHTS:
        weights = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        return F.dropout(weights, dropout_p) @ v  # p = 0: the weights themselves
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv Linear (``attention``). (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))
