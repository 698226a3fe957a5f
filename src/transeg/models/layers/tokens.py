"""Between token sequences and feature maps."""

from __future__ import annotations

import torch


def tokens_to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) -> (B, C, H, W), N = H W."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], size[0], size[1])
