"""Stochastic depth: the DropPath module and the per-block rates."""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample. (B, ...) -> (B, ...)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def drop_path_rates(rate: float, depths: tuple[int, ...]) -> list[list[float]]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over all blocks, split per stage."""
    rates = torch.linspace(0, rate, sum(depths), device="cpu").tolist()  # plain numbers, even under a meta device
    out, start = [], 0
    for depth in depths:
        out.append(rates[start : start + depth])
        start += depth
    return out


def linear_rates(rate: float, n: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over ``n`` blocks (no tensor, so
    that models can be built on the 'meta' device)."""
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]
