"""Building blocks shared by the encoders and decoders."""

from __future__ import annotations

import math

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


def init_linear_and_norm(module: nn.Module) -> None:
    """Linear: truncated normal (std 0.02), zero bias. LayerNorm: weight 1, bias 0 (ViT and Swin
    reference initialisation, applied with ``model.apply``)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_transformer_weights(module: nn.Module) -> None:
    """The initialisation of the MiT reference code, applied with ``model.apply``: as
    :func:`init_linear_and_norm`, plus Conv2d normal(0, sqrt(2 / fan_out)) with fan_out divided by
    the groups, zero bias."""
    init_linear_and_norm(module)
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def drop_path_rates(rate: float, depths: tuple[int, ...]) -> list[list[float]]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over all blocks, split per stage."""
    rates = torch.linspace(0, rate, sum(depths)).tolist()
    out, start = [], 0
    for depth in depths:
        out.append(rates[start : start + depth])
        start += depth
    return out
