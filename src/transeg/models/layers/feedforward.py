"""The transformer feed-forward block."""

from __future__ import annotations

import torch
from torch import nn


class FeedForward(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout. (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
