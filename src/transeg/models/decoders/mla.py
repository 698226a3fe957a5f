"""SETR's multi-level aggregation (MLA) decoder (Zheng et al., 2021), as MMSegmentation builds it
(``MLANeck`` + ``SETRMLAHead``); the "MLA (SETR)" decoder of SegFormer's Table 3.

Neck (``MLANeck``), per input level i (shallow to deep):

* optionally a LayerNorm over channels (MMSegmentation's ``norm_layer``; SETR's ViT outputs are the
  un-normalised residual stream);
* a 1x1 conv to ``channels`` (256), with BatchNorm + ReLU when ``neck_norm`` (SETR's recipe; without
  it: a plain conv with bias, MMSegmentation's ``MLANeck`` defaults);
* a top-down cumulative sum from the deepest level: m_deepest = p_deepest, m_i = m_{i+1} + p_i;
* a 3x3 conv (same norm / activation) on each sum.

Head (``SETRMLAHead``), per level: two 3x3 conv + BatchNorm + ReLU to ``head_channels`` (128),
bilinear upsampling by ``up_scale`` (4); the levels concatenated deepest first (MMSegmentation's
channel order), Dropout2d and a ``classifier_kernel`` x ``classifier_kernel`` classifier (1:
MMSegmentation; 3: the original SETR code).

ViT inputs (four maps at 1/16, e.g. blocks 6, 12, 18, 24 of ViT-L) are SETR-MLA as published, with
logits at 1/4. Hierarchical encoders (MiT, Swin: 1/4 ... 1/32) need equal sizes for the sum: each
level's 1x1 projection runs at the level's own resolution and is upsampled to the first (finest)
map; from the sum on everything runs at that size, and the head's upsampling by 4 gives logits at
the input's resolution (stride 1). That is where SegFormer's Table 3 counts the classifier: its 87.7
GFLOPs need the 3x3 convs at 1/4 and the classifier after the x4 upsampling (see ``tests/models/test_mla.py``).

The classifier (1x1) is linear and bilinear upsampling commutes with channel mixing (its weights
sum to one, so biases carry through): transeg classifies the concatenated maps before upsampling
and upsamples the K-channel logits. Same function and parameters, far less compute and memory (the
512-channel concatenation is never built at full size); ``fused_projection = False`` runs the
literal order (as ``analysis.complexity`` does to count the published architecture).

Optional auxiliary heads (MMSegmentation's SETR-MLA recipe: ``FCNHead`` with no conv, i.e. Dropout2d
and a 1x1 classifier, on each neck output, loss weight 0.4), run by ``forward_train`` only.

State-dict keys: ``input_norms.{i}``, ``lateral_convs.{i}.conv`` (+ ``.bn`` with ``neck_norm``),
``aug_convs.{i}.conv`` (+ ``.bn``), ``head_convs.{i}.{0,1}.{conv,bn}``, ``classifier``,
``aux_heads.{i}``, every index i the input level, shallow first. MMSegmentation's neck returns its
3x3 outputs deepest first, so its ``aug_convs`` / ``up_convs`` / auxiliary index j is level 3 - j
here (its ``proj_convs`` and ``norm`` are by level).

With ViT encoders, transeg's final LayerNorm is applied to the last block's output, so with
``input_norm`` the deepest level is normalised twice (MMSegmentation's ViT for SETR has no final
norm and also drops the class token from the transformer's input; transeg keeps it, as the original
SETR code does).
"""

from __future__ import annotations

from collections import OrderedDict
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

CLASSIFIER_KERNELS = (1, 3)


@dataclass(frozen=True)
class MLAConfig:
    """``channels``: the neck width (MMSegmentation's ``MLANeck.out_channels``, 256); the width that
    ``with_decoder_width`` sets. ``head_channels``: each level's width in the head (its
    ``mla_channels``, 128). ``input_norm``: LayerNorm on each input. ``neck_norm``: BatchNorm + ReLU
    after each neck conv. ``aux_heads``: the recipe's four auxiliary classifiers, weight ``aux_weight``."""

    channels: int = 256
    head_channels: int = 128
    input_norm: bool = True
    neck_norm: bool = True
    up_scale: int = 4
    classifier_kernel: int = 1
    dropout: float = 0.0
    aux_heads: bool = False
    aux_weight: float = 0.4

    def __post_init__(self) -> None:
        if self.channels < 1 or self.head_channels < 1 or self.up_scale < 1:
            raise TransegError(f"MLAConfig: channels {self.channels}, head_channels {self.head_channels} and "
                               f"up_scale {self.up_scale} must be positive")
        if self.classifier_kernel not in CLASSIFIER_KERNELS:
            raise TransegError(f"MLAConfig: classifier_kernel {self.classifier_kernel} is not one of "
                               f"{CLASSIFIER_KERNELS}")
        if not 0.0 <= self.dropout < 1.0:
            raise TransegError(f"MLAConfig: dropout {self.dropout} must be in [0, 1)")


def _neck_conv(in_channels: int, out_channels: int, kernel_size: int, norm: bool) -> nn.Module:
    """ConvModule (no bias, BatchNorm, ReLU), or a plain conv with bias (key ``conv`` either way)."""
    if norm:
        return ConvNormAct(in_channels, out_channels, kernel_size)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # mmcv's ConvModule
    nn.init.zeros_(conv.bias)
    return nn.Sequential(OrderedDict(conv=conv))


def _classifier(in_channels: int, num_classes: int, kernel_size: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, num_classes, kernel_size, padding=kernel_size // 2)
    nn.init.normal_(conv.weight, 0.0, 0.01)  # mmseg's conv_seg
    nn.init.zeros_(conv.bias)
    return conv



class MLADecoder(Decoder):
    """[(B, C_i, H_i, W_i)] -> logits (B, K, s*H_0, s*W_0), s = ``up_scale``."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, cfg: MLAConfig) -> None:
        super().__init__()
        if not in_channels:
            raise TransegError("MLADecoder: the encoder returns no features")
        self.config = cfg
        c, h, n = cfg.channels, cfg.head_channels, len(in_channels)
        self.input_norms = nn.ModuleList(nn.LayerNorm(ci, eps=1e-6) for ci in in_channels) if cfg.input_norm else None
        self.lateral_convs = nn.ModuleList(_neck_conv(ci, c, 1, cfg.neck_norm) for ci in in_channels)
        self.aug_convs = nn.ModuleList(_neck_conv(c, c, 3, cfg.neck_norm) for _ in in_channels)
        self.head_convs = nn.ModuleList(nn.Sequential(ConvNormAct(c, h, 3), ConvNormAct(h, h, 3)) for _ in in_channels)
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.classifier = _classifier(n * h, num_classes, cfg.classifier_kernel)
        if cfg.aux_heads:
            self.aux_heads = nn.ModuleList(_classifier(c, num_classes) for _ in in_channels)
        self.fused_projection = True  # classify, then upsample (see the module docstring)

    def neck(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """[(B, C_i, H_i, W_i)] -> [(B, channels, H_0, W_0)] per level, shallow first."""
        size = features[0].shape[2:]
        projected = []
        for i, (x, conv) in enumerate(zip(features, self.lateral_convs, strict=True)):
            if self.input_norms is not None:
                x = self.input_norms[i](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            x = conv(x)
            if i > 0:  # decided by position, not by shape, so that export sees no shape test
                x = resize(x, size)  # the identity for ViT's equal-size maps
            projected.append(x)
        sums = [projected[-1]]
        for x in reversed(projected[:-1]):  # top-down: deepest first
            sums.append(sums[-1] + x)
        return [conv(m) for conv, m in zip(self.aug_convs, reversed(sums), strict=True)]

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._head(self.neck(features))

    def _head(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        heads = [conv(x) for conv, x in zip(self.head_convs, levels, strict=True)][::-1]  # deepest first
        s = self.config.up_scale
        if self.fused_projection and self.config.classifier_kernel == 1:
            logits = self.classifier(self.dropout(torch.cat(heads, dim=1)))
            return logits if s == 1 else F.interpolate(logits, scale_factor=s, mode="bilinear", align_corners=False)
        if s > 1:
            heads = [F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False) for x in heads]
        return self.classifier(self.dropout(torch.cat(heads, dim=1)))

    def forward_train(self, features: Sequence[torch.Tensor], labels: torch.Tensor | None = None) -> SegOutput:
        """The logits, plus each auxiliary head's (``aux0`` ... by level, at the neck's resolution)."""
        levels = self.neck(features)
        logits = self._head(levels)
        if not self.config.aux_heads:
            return SegOutput(logits)
        aux = {f"aux{i}": head(self.dropout(x)) for i, (head, x) in enumerate(zip(self.aux_heads, levels, strict=True))}
        return SegOutput(logits, aux, dict.fromkeys(aux, self.config.aux_weight))
