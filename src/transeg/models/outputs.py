"""What a forward pass returns beyond plain logits: a leaf module, imported by decoders and training."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SegOutput:
    """What training needs from a forward pass: the logits, any auxiliary predictions (logits
    supervised by the same labels) and the loss weight of each (overridable by the config)."""

    logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    aux_weights: dict[str, float] = field(default_factory=dict)
