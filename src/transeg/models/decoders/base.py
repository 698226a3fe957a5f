"""What every decoder provides: logits for inference, and the training pass with its auxiliary outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from transeg.models.outputs import SegOutput


class Decoder(nn.Module):
    """A list of NCHW feature maps -> logits (B, K, h, w).

    ``forward`` returns a plain tensor (exportable); ``forward_train`` returns a ``SegOutput`` whose
    ``aux`` holds any auxiliary logits and their loss weights. Decoders without auxiliary outputs
    inherit this one, which returns the logits alone. ``forward_train`` also receives the training
    labels (B, H, W) at the input size (padded with 255 like the input, if the encoder pads), or None:
    only a decoder that learns from them in the forward pass reads them (SegDeformer's momentum tokens).

    ``onnx_dynamic_size`` (declared; default True): whether the decoder exports to ONNX with dynamic
    height and width. A decoder whose operators the exporter specialises to the example's size
    (adaptive pooling to fixed bins: UperNet's PPM) declares False; the model then exports at a fixed size.
    """

    onnx_dynamic_size: bool = True

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward_train(self, features: Sequence[torch.Tensor], labels: torch.Tensor | None = None) -> SegOutput:
        return SegOutput(self(features))
