"""MMSegmentation's ``SegformerHead``: SegFormer's decoder as MMSegmentation builds it.

It differs from NVIDIA's All-MLP decoder (``mlp.py``): each stage goes through its own 1x1
ConvModule (conv without bias + BatchNorm + ReLU) to C channels at the stage's resolution, is
upsampled bilinearly to the first map, and the stages are concatenated **shallowest first** (c1..c4;
NVIDIA's decoder: deepest first); a 1x1 fusion ConvModule (conv + BN + ReLU) to C, Dropout2d and a
1x1 classifier (``conv_seg``, normal std 0.01) follow. C = 256 in every MMSegmentation SegFormer
config. The per-branch ReLU means the branch convs cannot be folded into the fusion weights, but the
fusion conv itself (no bias) commutes with upsampling: by default each stage's slice of it is applied
before upsampling and the results summed (``fused_projection = False`` runs the literal order).

This head is also the "SegFormer" baseline of the SegDeformer paper and the fusion of its released
head (``segdeformer/released.py`` shares :func:`segformer_head_fusion`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transeg.models.decoders.base import Decoder
from transeg.models.layers.conv import ConvNormAct
from transeg.models.layers.resize import resize


@dataclass(frozen=True)
class SegformerHeadConfig:
    """``channels``: C, the width of every branch and of the fusion (MMSegmentation: 256)."""

    channels: int = 256
    dropout: float = 0.1


def segformer_head_fusion(proj: nn.ModuleList, fuse: ConvNormAct, features: Sequence[torch.Tensor],
                          composed: bool) -> torch.Tensor:
    """SegformerHead's fusion: [(B, C_i, H_i, W_i)] -> (B, C, H_0, W_0).

    ``proj``: one ConvNormAct per stage (C_i -> C); ``fuse``: ConvNormAct (n C -> C) whose input
    blocks are in stage order. ``composed``: apply each stage's block of the fusion conv at the
    stage's resolution, then upsample and sum (the same function, fewer MACs); otherwise upsample,
    concatenate and fuse, MMSegmentation's order of operations.
    """
    size = features[0].shape[2:]
    projected = [p(x) for p, x in zip(proj, features, strict=True)]
    if not composed:
        ups = [projected[0], *(resize(y, size) for y in projected[1:])]
        return fuse(torch.cat(ups, dim=1))
    c = fuse.conv.weight.shape[0]
    out = None
    for i, y in enumerate(projected):
        y = F.conv2d(y, fuse.conv.weight[:, i * c : (i + 1) * c])
        if i > 0:  # by position, not shape, so that export sees no shape test
            y = resize(y, size)
        out = y if out is None else out + y
    return F.relu(fuse.bn(out))


class SegformerHead(Decoder):
    """MMSegmentation's SegformerHead. [(B, C_i, H_i, W_i)] -> logits (B, K, H_0, W_0).

    Parameter names: ``proj.{i}.{conv,bn}``, ``fuse.{conv,bn}``, ``classifier`` (MMSegmentation:
    ``convs.{i}``, ``fusion_conv``, ``conv_seg``).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, cfg: SegformerHeadConfig) -> None:
        super().__init__()
        self.config = cfg
        c = cfg.channels
        self.proj = nn.ModuleList(ConvNormAct(ch, c) for ch in in_channels)
        self.fuse = ConvNormAct(c * len(in_channels), c)
        self.fused_projection = True
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.classifier = nn.Conv2d(c, num_classes, 1)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        fused = segformer_head_fusion(self.proj, self.fuse, features, self.fused_projection)
        return self.classifier(self.dropout(fused))
