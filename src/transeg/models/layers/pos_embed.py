"""Resizing learned absolute position embeddings to another patch grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from transeg.errors import TransegError


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                     num_extra_tokens: int, mode: str = "bilinear") -> torch.Tensor:
    """(1, E + h*w, D) -> (1, E + h'*w', D): the grid part resized (align_corners=False), the E
    extra-token embeddings kept."""
    extra, grid = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    (h, w), (nh, nw) = old_grid, new_grid
    if grid.shape[1] != h * w:
        raise TransegError(f"position embeddings hold {grid.shape[1]} grid entries, not {h}x{w}")
    grid = grid.reshape(1, h, w, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(nh, nw), mode=mode, align_corners=False)
    return torch.cat([extra, grid.permute(0, 2, 3, 1).reshape(1, nh * nw, -1)], dim=1)
