"""UperNet (Xiao et al., 2018), as MMSegmentation's ``UPerHead`` used by Swin and SegDeformer.

Fusion (``UperNetFusion``, also usable alone, e.g. as SegDeformer's "UperNet fusion"):

* PPM on the deepest map: adaptive average pooling to each of ``pool_scales``, ConvModule 1x1,
  bilinear upsampling back; concatenated with the map and fused by a 3x3 ConvModule
  (``bottleneck``);
* FPN: a 1x1 lateral ConvModule per other level, top-down (deepest first) upsample-and-add, a 3x3
  ConvModule on each of those levels;
* every level upsampled to the first (1/4) map, concatenated shallow first, fused by a 3x3
  ConvModule (``fpn_bottleneck``).

ConvModule = conv without bias + BatchNorm + ReLU. Upsampling is bilinear, align_corners=False.
``UperNetDecoder`` adds Dropout2d and a 1x1 classifier, and optionally MMSegmentation's auxiliary
FCN head (one 3x3 ConvModule, Dropout2d, 1x1 classifier on feature ``aux_index``), which the
UperNet recipes train with weight 0.4 and which only ``forward_train`` runs.

In training, the PPM's 1x1-pooled branch sees one value per channel and image: BatchNorm needs a
batch of at least two there (MMSegmentation trains with SyncBN over 16 images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transeg.errors import TransegError
from transeg.models.decoders.base import Decoder
from transeg.models.layers.conv import ConvNormAct
from transeg.models.layers.resize import resize
from transeg.models.outputs import SegOutput


@dataclass(frozen=True)
class UperNetConfig:
    """``channels``: width of every fused map (512 in the Swin/UperNet recipes). ``aux_channels``
    > 0 adds the auxiliary FCN head on feature ``aux_index`` (recipes: 256 on stage 3, index 2),
    its loss weighted by ``aux_weight``."""

    channels: int = 512
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = 0.1
    aux_channels: int = 0
    aux_index: int = 2
    aux_weight: float = 0.4

    def __post_init__(self) -> None:
        if self.channels < 1 or self.aux_channels < 0:
            raise TransegError(f"UperNetConfig: channels {self.channels} must be positive and aux_channels "
                               f"{self.aux_channels} not negative")
        if not self.pool_scales or any(s < 1 for s in self.pool_scales):
            raise TransegError(f"UperNetConfig: pool_scales {self.pool_scales} must be positive sizes")



class PyramidPooling(nn.Module):
    """PPM + bottleneck: (B, C_in, h, w) -> (B, C, h, w)."""

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int]) -> None:
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.convs = nn.ModuleList(ConvNormAct(in_channels, channels) for _ in self.pool_scales)
        self.bottleneck = ConvNormAct(in_channels + len(self.pool_scales) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pooled = [resize(conv(F.adaptive_avg_pool2d(x, scale)), size)
                  for scale, conv in zip(self.pool_scales, self.convs, strict=True)]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UperNetFusion(nn.Module):
    """PPM + FPN fusion of a feature pyramid. [(B, C_i, H_i, W_i)] -> (B, channels, H_0, W_0).

    ``in_channels`` lists the levels shallow to deep; any number of levels (one: PPM only).
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 512,
                 pool_scales: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.out_channels = channels
        self.ppm = PyramidPooling(in_channels[-1], channels, pool_scales)
        self.lateral_convs = nn.ModuleList(ConvNormAct(c, channels) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvNormAct(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvNormAct(len(in_channels) * channels, channels, 3)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, features[:-1], strict=True)]
        laterals.append(self.ppm(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: deepest first
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1], strict=True)] + [laterals[-1]]
        size = outs[0].shape[2:]
        # upsampling decided by position, not by shape, so that export sees no shape test
        outs = [outs[0], *(resize(x, size) for x in outs[1:])]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))


class FCNAuxHead(nn.Module):
    """MMSegmentation's auxiliary ``FCNHead`` (num_convs 1, kernel 3, no input concat).
    (B, C_in, h, w) -> logits (B, K, h, w)."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        _init_classifier(self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


def _init_classifier(conv: nn.Conv2d) -> None:
    nn.init.normal_(conv.weight, 0.0, 0.01)  # mmseg's conv_seg
    nn.init.zeros_(conv.bias)


class UperNetDecoder(Decoder):
    """[(B, C_i, H_i, W_i)] -> logits (B, K, H_0, W_0) (1/4 of the input for Swin and MiT)."""

    # the PPM's adaptive pooling exports specialised to the example size (bins 2, 3, 6 go wrong or fail at others)
    onnx_dynamic_size = False

    def __init__(self, in_channels: Sequence[int], num_classes: int, cfg: UperNetConfig) -> None:
        super().__init__()
        self.config = cfg
        self.fusion = UperNetFusion(in_channels, cfg.channels, cfg.pool_scales)
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.classifier = nn.Conv2d(cfg.channels, num_classes, 1)
        _init_classifier(self.classifier)
        if cfg.aux_channels:
            if not -len(in_channels) <= cfg.aux_index < len(in_channels):
                raise TransegError(f"UperNetConfig: aux_index {cfg.aux_index} out of range for "
                                   f"{len(in_channels)} encoder features")
            self.aux = FCNAuxHead(in_channels[cfg.aux_index], cfg.aux_channels, num_classes, cfg.dropout)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.dropout(self.fusion(features)))

    def forward_train(self, features: Sequence[torch.Tensor], labels: torch.Tensor | None = None) -> SegOutput:
        """The logits, plus the auxiliary head's (name ``aux``) when configured."""
        logits = self(features)
        if not self.config.aux_channels:
            return SegOutput(logits)
        aux = self.aux(features[self.config.aux_index])
        return SegOutput(logits, {"aux": aux}, {"aux": self.config.aux_weight})
