"""Tensors derived from parameters, cached between eval-style calls, and the tracing test that disables them."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from contextlib import nullcontext
from typing import Any

import torch


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
