"""A self-contained ONNX model: uint8 RGB images in, labels (or probabilities, or logits) out.

The graph does what ``transeg predict`` does in 'whole' mode around the model: normalisation with the
model's mean/std, an optional resize to multiples of ``size_divisor``, zero padding of sides below the
model's ``min_input_size`` (``modes.padded_forward``), and the bilinear resize of the logits back to
the input's size, then the argmax (or softmax). Nothing but ONNX Runtime is needed to run it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from transeg.inference.export import DEFAULT_OPSET, check_export, model_metadata, write_onnx
from transeg.models.layers.resize import resize
from transeg.models.segmentor import Segmentor

Output = Literal["labels", "probs", "logits"]
OUTPUTS = ("labels", "probs", "logits")


class EmbeddedPreprocess(nn.Module):
    """(B, H, W, 3) uint8 RGB -> (B, H, W) labels (uint8 up to 256 classes, else int64), or (B, K, H, W)
    float32 probabilities or logits, as ``Predictor(model, 'whole', size_divisor=...)`` computes them.

    Every step runs unconditionally (a resize to the same size and a padding of zero are exact
    no-ops), so that the exported graph holds no test on the input's size.
    """

    def __init__(self, model: Segmentor, output: Output = "labels", size_divisor: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.output = output
        self.size_divisor = size_divisor
        self.least = model.min_input_size
        self.register_buffer("mean", torch.tensor(model.config.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(model.config.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[1], image.shape[2]
        x = (image.permute(0, 3, 1, 2).float() - self.mean) / self.std
        if self.size_divisor is not None:
            d = self.size_divisor
            x = resize(x, ((h + d - 1) // d * d, (w + d - 1) // d * d))
        sh, sw = x.shape[-2], x.shape[-1]
        padded = F.pad(x, (0, torch.sym_max(self.least - sw, 0), 0, torch.sym_max(self.least - sh, 0)))
        logits = resize(self.model(padded), (padded.shape[-2], padded.shape[-1]))
        logits = logits.index_select(-2, torch.arange(sh)).index_select(-1, torch.arange(sw))
        logits = resize(logits, (h, w))
        k = logits.shape[1]
        if self.output == "logits":
            return logits
        if self.output == "probs":
            return torch.sigmoid(logits) if k == 1 else logits.softmax(dim=1)
        labels = (logits[:, 0] > 0).long() if k == 1 else logits.argmax(dim=1)
        return labels.to(torch.uint8) if k <= 256 else labels


def export_embedded(model: Segmentor, path: str | os.PathLike[str], output: Output = "labels",
                    size_divisor: int | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``EmbeddedPreprocess(model, output, size_divisor)`` as ONNX: input ``image`` (B, H, W, 3)
    uint8 with dynamic batch, height and width (1 to 8192), output ``labels``, ``probs`` or ``logits``;
    ``model_metadata`` plus the input and output layout in the metadata."""
    check_export(model, opset, None)
    wrapper = EmbeddedPreprocess(model.eval(), output, size_divisor).eval()
    example = torch.randint(0, 256, (2, 96, 128, 3), dtype=torch.uint8)  # a batch of 1 would be specialised
    dims = {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("height", min=1, max=8192),
            2: torch.export.Dim("width", min=1, max=8192)}
    layout = {"labels": "labels (B, H, W) argmax", "probs": "probs (B, K, H, W) softmax",
              "logits": "logits (B, K, H, W)"}[output]
    metadata = {**model_metadata(model), "input": "image (B, H, W, 3) uint8 RGB", "output": layout,
                "size_divisor": str(size_divisor or "")}
    return write_onnx(wrapper, example, Path(path), opset, ("image", output), dims, metadata)
