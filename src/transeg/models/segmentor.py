"""Segmentor: an encoder producing a feature pyramid and a decoder producing class logits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transeg.models.config import ModelConfig


@dataclass
class SegOutput:
    """What training needs from a forward pass: the logits and any auxiliary predictions."""

    logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


class Segmentor(nn.Module):
    """(B, 3, H, W) -> logits (B, K, H/s, W/s), s being the decoder's output stride (4 for SegFormer).

    ``forward`` returns a plain tensor so that the model exports as is (ONNX, torch.export);
    ``forward_train`` adds the decoder's auxiliary outputs for the loss.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.config = config

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def forward_train(self, x: torch.Tensor) -> SegOutput:
        out = self.decoder(self.encoder(x))
        if isinstance(out, SegOutput):
            return out
        return SegOutput(logits=out)
