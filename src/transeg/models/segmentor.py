"""Segmentor: an encoder producing a feature pyramid and a decoder producing class logits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from transeg.models.config import ModelConfig


@dataclass
class SegOutput:
    """What training needs from a forward pass: the logits, any auxiliary predictions (logits
    supervised by the same labels) and the loss weight of each (overridable by the config)."""

    logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    aux_weights: dict[str, float] = field(default_factory=dict)


class Segmentor(nn.Module):
    """(B, 3, H, W) -> logits (B, K, H/s, W/s), s being the decoder's output stride (4 for SegFormer;
    1 for Segmenter, whose patch-grid logits are upsampled and cropped as in its official code, see
    ``unpad``).

    ``forward`` returns a plain tensor so that the model exports as is (ONNX, torch.export);
    ``forward_train`` adds the auxiliary outputs of decoders that define ``forward_train``.
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
        return self.unpad(self.decoder(self.encoder(x)), x.shape[-2:])

    def forward_train(self, x: torch.Tensor) -> SegOutput:
        features = self.encoder(x)
        if not hasattr(self.decoder, "forward_train"):
            return SegOutput(logits=self.unpad(self.decoder(features), x.shape[-2:]))
        out = self.decoder.forward_train(features)
        size = x.shape[-2:]
        aux = {k: self.unpad(v, size) for k, v in out.aux.items()}
        return SegOutput(self.unpad(out.logits, size), aux, out.aux_weights)

    def unpad(self, maps: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """Undo an encoder's zero padding of the input to a multiple of ``encoder.pad_multiple`` (ViT:
        the patch size p, padding at the bottom and right): the decoder's maps cover the padded
        image, so they are upsampled (bilinear, align_corners=False) to the padded size and cropped
        to ``size``, as the official Segmenter does. The output is then at the input's resolution
        (stride 1) and aligned with it whatever its size; the same at every size, so that export
        with dynamic shapes sees no shape test. Encoders that do not pad: returned unchanged.
        """
        multiple = getattr(self.encoder, "pad_multiple", None)
        if not multiple:
            return maps
        h, w = size[0], size[1]
        padded = (h + (multiple - h % multiple) % multiple, w + (multiple - w % multiple) % multiple)
        maps = F.interpolate(maps, size=padded, mode="bilinear", align_corners=False)
        # index_select rather than a slice: a view's contiguity test would pin the padding under export
        rows, cols = torch.arange(h, device=maps.device), torch.arange(w, device=maps.device)
        return maps.index_select(-2, rows).index_select(-1, cols)
