"""The reference initialisations of transformer encoders, applied with ``model.apply``."""

from __future__ import annotations

import math

from torch import nn


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
