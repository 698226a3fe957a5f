"""Model size and compute: parameter counts and multiply-accumulates (MACs) of one forward pass.

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (which reports FLOPs = 2 x MACs) and
cover convolutions, linear layers and matrix products, including the two products of attention
(QK^T and AV). Norms, activations, bias additions, softmax and interpolation are not counted.

This reproduces the "FLOPs" of the SegFormer paper (Table 1a), which are MACs: its ``tools/get_flops.py``
ran mmcv's ``get_model_complexity_info`` (convs and ``nn.Linear`` as MACs; elementwise norm, ReLU and
conv-bias terms; ``F.interpolate`` and the functional attention products not at all) and added the
attention products by formula (``sra_flops``: 2 x N x N/r² x C per block). The elementwise terms are
under 0.5% of the total; without them B0..B5 land within 0.2% of the paper.
"""

from __future__ import annotations

import copy
from itertools import chain
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from transeg.models.segmentor import Segmentor


def _sdpa_flops(query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: Any,
                out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# The CPU kernel of F.scaled_dot_product_attention is missing from FlopCounterMode's registry (the
# CUDA flash, efficient and cuDNN kernels are there; on 'meta' the math path runs as counted bmm's).
_SDPA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def count_parameters(model: Segmentor) -> dict[str, int]:
    """Parameter counts of the encoder, the decoder and the whole model."""

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    return {"encoder": count(model.encoder), "decoder": count(model.decoder), "total": count(model)}


def _copy_to(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy of ``model`` on ``device`` (on 'meta' no weight is copied or allocated)."""
    memo: dict[int, torch.Tensor] = {}
    for t in chain(model.parameters(), model.buffers()):
        moved = t.detach().to(device)
        memo[id(t)] = nn.Parameter(moved, t.requires_grad) if isinstance(t, nn.Parameter) else moved
    return copy.deepcopy(model, memo)


def count_macs(model: nn.Module, size: tuple[int, int], batch: int = 1,
               device: str | torch.device = "meta", paper_form: bool = True) -> float:
    """Multiply-accumulates of one eval-mode forward of a (batch, 3, H, W) input. ``model`` is left
    as is; a copy runs on ``device``, 'meta' (no memory, fast) unless the model cannot run there.

    ``paper_form`` counts the architecture as the papers define it (e.g. SegFormer's decoder fusing
    4C -> C at 1/4 resolution); otherwise what transeg executes (the composed projections).
    """
    device = torch.device(device)
    runner = _copy_to(model, device).eval()
    for module in runner.modules():
        if hasattr(module, "fused_projection"):
            module.fused_projection = not paper_form
    x = torch.empty(batch, 3, *size, device=device, dtype=next(model.parameters()).dtype)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_SDPA_FORMULAS) as counter:
        runner(x)
    return counter.get_total_flops() / 2


def model_complexity(model: Segmentor, size: tuple[int, int]) -> dict[str, Any]:
    """``{"params": {"encoder", "decoder", "total"}, "gmacs": float, "gmacs_executed": float}`` at one
    (H, W) input: GMACs as the papers count them, and those transeg's forward actually performs."""
    model.require_input_size(size, "the size")
    return {"params": count_parameters(model), "gmacs": count_macs(model, size) / 1e9,
            "gmacs_executed": count_macs(model, size, paper_form=False) / 1e9}
