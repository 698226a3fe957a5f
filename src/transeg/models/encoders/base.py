"""What every encoder declares: its output pyramid and what it supports, read instead of guessed."""

from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    """(B, C_in, H, W) -> a list of NCHW maps with ``out_channels`` channels at ``strides``.

    Declared capabilities (class attributes, overridden where they differ):

    * ``pad_multiple``: the encoder zero-pads its input to a multiple of this (ViT: the patch size);
      ``Segmentor.unpad`` crops the logits back. ``None``: no padding.
    * ``onnx_dynamic_size``: whether it exports to ONNX with dynamic height and width; ``False``
      (Swin) means an export needs a fixed size.
    """

    pad_multiple: int | None = None
    onnx_dynamic_size: bool = True
    out_channels: tuple[int, ...]
    strides: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError
