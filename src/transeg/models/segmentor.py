"""Segmentor: an encoder producing a feature pyramid and a decoder producing class logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transeg.data.labels import IGNORE_INDEX
from transeg.errors import TransegError
from transeg.models.config import ModelConfig
from transeg.models.decoders.base import Decoder
from transeg.models.encoders.base import Encoder
from transeg.models.layers.resize import resize
from transeg.models.outputs import SegOutput


class Segmentor(nn.Module):
    """(B, 3, H, W) -> logits (B, K, H/s, W/s), s being the decoder's output stride (4 for SegFormer;
    1 for Segmenter, whose patch-grid logits are upsampled and cropped as in its official code, see
    ``unpad``).

    ``forward`` returns a plain tensor so that the model exports as is (ONNX, torch.export);
    ``forward_train`` adds the decoder's auxiliary outputs. What the model supports is declared by
    its parts (``onnx_dynamic_size``, ``pad_multiple``, ``min_input_size``), never guessed.
    """

    def __init__(self, encoder: Encoder, decoder: Decoder, config: ModelConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.config = config

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def in_channels(self) -> int:
        """Input bands C of (B, C, H, W) images: 3 for RGB, N for N-band rasters."""
        return self.config.encoder_config.in_channels

    @property
    def onnx_dynamic_size(self) -> bool:
        """Whether the model exports to ONNX with dynamic height and width (else a fixed size): both its
        encoder and its decoder must declare so."""
        return self.encoder.onnx_dynamic_size and self.decoder.onnx_dynamic_size

    @property
    def fixed_size_part(self) -> str:
        """Which part needs a fixed export size, for messages: e.g. "swin encoder", "uper decoder"."""
        if not self.encoder.onnx_dynamic_size:
            return f"{self.config.encoder} encoder"
        return f"{self.config.decoder} decoder"

    @property
    def min_input_size(self) -> int:
        """The smallest input height and width the model runs on (its encoder's declaration)."""
        return self.encoder.min_input_size

    def require_input_size(self, size: tuple[int, int], what: str = "the input size") -> None:
        """Refuse, naming ``what``, an (H, W) below ``min_input_size``: inference pads such images, but
        measurements of the raw model (bench, parameter and GMAC counts) cannot."""
        low = self.min_input_size
        if min(size) < low:
            raise TransegError(f"{what} {size[0]}x{size[1]} is below {self.config.name}'s minimum of {low} pixels "
                               "per side")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unpad(self.decoder(self.encoder(x)), x.shape[-2:])

    def forward_train(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> SegOutput:
        """The training pass; ``labels`` (B, H, W), the ground truth of ``x``, go to the decoders that
        learn from them in the forward pass, padded with 255 as the encoder pads ``x``."""
        if labels is not None and self.encoder.pad_multiple:
            multiple = self.encoder.pad_multiple
            h, w = labels.shape[-2:]
            labels = F.pad(labels, (0, (multiple - w % multiple) % multiple, 0, (multiple - h % multiple) % multiple),
                           value=IGNORE_INDEX)
        out = self.decoder.forward_train(self.encoder(x), labels)
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
        multiple = self.encoder.pad_multiple
        if not multiple:
            return maps
        h, w = size[0], size[1]
        padded = (h + (multiple - h % multiple) % multiple, w + (multiple - w % multiple) % multiple)
        maps = resize(maps, padded)
        # index_select rather than a slice: a view's contiguity test would pin the padding under export
        rows, cols = torch.arange(h, device=maps.device), torch.arange(w, device=maps.device)
        return maps.index_select(-2, rows).index_select(-1, cols)
