"""The one resize of feature maps and logits used throughout: bilinear, align_corners=False."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: Sequence[int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (B, C, h, w) to (B, C, *size)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
