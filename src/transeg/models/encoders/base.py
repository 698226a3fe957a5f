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
    * ``min_input_size``: the smallest H and W it runs on (MiT: 29, its stride-8 spatial-reduction
      conv needs an 8 x 8 stage-1 grid). 1 for the encoders that pad their input themselves (ViT
      to the patch size, Swin to the patch size and the window) or whose convolutions are all
      padded (ResNet). Inference zero-pads smaller images up to it (``inference.modes``).
    """

    pad_multiple: int | None = None
    min_input_size: int = 1
    onnx_dynamic_size: bool = True
    out_channels: tuple[int, ...]
    strides: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError
