"""Building blocks shared by the encoders and decoders."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from contextlib import nullcontext
from typing import Any

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


def is_tracing() -> bool:
    """Under torch.jit tracing, torch.compile or torch.export (the latter two as far as this torch knows):
    modules then skip their eval-mode caches so that graphs hold no stale constants or shape tests."""
    compiler = getattr(torch, "compiler", None)
    checks = (getattr(compiler, name, None) for name in ("is_compiling", "is_exporting"))
    return torch.jit.is_tracing() or any(check() for check in checks if check is not None)


class DerivedTensorCache:
    """Tensors derived from parameters (resized position tables, folded weights), kept between
    eval-style calls: one value per ``extra`` (e.g. a grid size), recomputed when a source changes.
    Nothing is cached while autograd records, under tracing/compiling/export (the graph must hold
    the computation), or for inference tensors (they have no version counter). A value is reused
    only while every source keeps its identity, version counter (bumped by every in-place update,
    ``load_state_dict`` included), storage, device and dtype, so stale values are never returned."""

    def __init__(self, max_items: int = 8) -> None:
        self.max_items = max_items
        self._items: dict[Hashable, tuple[tuple, Any]] = {}

    def get(self, sources: Sequence[torch.Tensor], compute: Callable[[], Any], extra: Hashable = None) -> Any:
        """``compute()``, or its cached value for the same ``sources`` (and ``extra``)."""
        if torch.is_grad_enabled() or is_tracing() or any(t.is_inference() for t in sources):
            return compute()
        slot = (extra, torch.is_inference_mode_enabled())
        state = tuple((id(t), t._version, t.data_ptr(), t.device, t.dtype) for t in sources)
        cached = self._items.get(slot)
        if cached is not None and cached[0] == state:
            return cached[1]
        if slot not in self._items and len(self._items) >= self.max_items:
            self._items.pop(next(iter(self._items)))
        device = sources[0].device.type
        no_autocast = torch.autocast(device, enabled=False) if device in ("cpu", "cuda") else nullcontext()
        with no_autocast:  # derived values keep the sources' dtype
            value = compute()
        self._items[slot] = (state, value)
        return value

    def __len__(self) -> int:
        return len(self._items)


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
    # read back on the CPU, so that models also build under a "meta" default device
    rates = torch.linspace(0, rate, sum(depths), device="cpu").tolist()
    out, start = [], 0
    for depth in depths:
        out.append(rates[start : start + depth])
        start += depth
    return out
