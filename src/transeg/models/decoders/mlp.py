"""The All-MLP decoder of SegFormer.

Each stage is projected to C channels by a Linear (no norm, no activation), upsampled to the
1/4 map, concatenated deepest first, fused by a 1x1 conv (no bias) + BatchNorm + ReLU, then
Dropout2d and a 1x1 classifier.

Everything before the BatchNorm is linear, and bilinear upsampling commutes with channel mixing
(its weights sum to one, so it also carries biases through). The fuse conv's slice for stage i
therefore composes with that stage's projection into one C x C_i matrix, applied at the stage's
own resolution; the C-channel results are upsampled and summed. Same function, same parameters
(and state dict), but the 4C -> C fuse no longer runs at 1/4 resolution: for B0 at 512x512 the
decoder drops from 5.2 to 1.0 GMACs. ``fused_projection = False`` runs the paper's literal form.

In eval mode the BatchNorm is an affine map too, so it folds into the composed weights, and the
whole decoder runs on channels-last maps (the encoders' natural token layout): per-stage matmuls,
channels-last bilinear upsampling accumulated in place, ReLU, and the classifier as a matmul.
The folded weights are cached until a parameter changes.

``in_stages`` selects the encoder maps the decoder reads (SegFormer Table 1d's "S4" = ``(3,)``, the
deepest map alone); the output stays at the resolution of the encoder's first map. ``proj.{j}``
projects stage ``in_stages[j]``, so the state dict holds the used stages' projections only. With
one stage there is nothing to fuse and no fuse conv (it would be a second linear map right after
the projection): projection, upsampling, BatchNorm + ReLU, classifier. That is the form whose
counts the paper reports for MiT-B2 (S4): 22.3 GFLOPs and 24.7 M parameters at C = 768, against
31.9 and 25.3 with a C x C fuse conv at 1/4 resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transeg.errors import TransegError
from transeg.models.decoders.base import Decoder
from transeg.models.layers.cache import DerivedTensorCache
from transeg.models.layers.resize import resize


@dataclass(frozen=True)
class MLPDecoderConfig:
    """``in_stages``: indices of the encoder maps to decode, increasing (None: all of them)."""

    embed_dim: int = 256
    dropout: float = 0.1
    in_stages: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        stages = self.in_stages
        if stages is not None and (not stages or list(stages) != sorted(set(stages)) or stages[0] < 0):
            raise TransegError(f"MLPDecoderConfig: in_stages must be increasing, non-negative stage indices, "
                               f"got {stages}")


class MLPDecoder(Decoder):
    """[(B, C_i, H_i, W_i)] -> logits (B, K, H_0, W_0)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, cfg: MLPDecoderConfig) -> None:
        super().__init__()
        self.config = cfg
        e = cfg.embed_dim
        stages = tuple(range(len(in_channels))) if cfg.in_stages is None else tuple(cfg.in_stages)
        if stages[-1] >= len(in_channels):
            raise TransegError(f"MLPDecoderConfig: in_stages {stages} asks for stages the encoder lacks "
                               f"({len(in_channels)} maps)")
        self.stages = stages
        self.proj = nn.ModuleList(nn.Linear(in_channels[s], e) for s in stages)
        self.fuse = nn.Conv2d(e * len(stages), e, 1, bias=False) if len(stages) > 1 else None
        self.norm = nn.BatchNorm2d(e)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.classifier = nn.Conv2d(e, num_classes, 1)
        self.fused_projection = True
        self._folded_cache = DerivedTensorCache(max_items=1)
        for proj in self.proj:
            nn.init.trunc_normal_(proj.weight, std=0.02)
            nn.init.zeros_(proj.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if not self.training and self.fused_projection:
            return self._infer_folded(features)
        return self.classifier(self.dropout(self.fused_features(features)))

    def _infer_folded(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Eval-mode forward with the BatchNorm folded in, on channels-last maps:
        [(B, C_i, H_i, W_i)] -> logits (B, K, H_0, W_0) (a channels-last view)."""
        size = features[0].shape[2:]
        out = None
        for stage, (weight, bias) in reversed(list(zip(self.stages, self._folded_weights(), strict=True))):
            y = F.linear(features[stage].permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
            if stage > 0:
                y = resize(y, size)
            out = y if out is None else out.add_(y)
        hidden = out.relu_().permute(0, 2, 3, 1)
        return F.linear(hidden, self.classifier.weight[:, :, 0, 0], self.classifier.bias).permute(0, 3, 1, 2)

    def _folded_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per stage, (E, C_i) weight and (E,) bias of projection, fuse slice and BatchNorm composed
        (the BatchNorm shift rides on the deepest stage's bias), cached outside autograd."""
        return self._folded_cache.get([*self.parameters(), *self.norm.buffers()], self._fold)

    def _fold(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        norm = self.norm
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        e, n = self.config.embed_dim, len(self.proj)
        folded = []
        for i, proj in enumerate(self.proj):
            if self.fuse is None:  # a single stage: no fuse conv
                weight, bias = proj.weight * scale[:, None], proj.bias * scale
            else:  # the stage's (E, E) block of the fuse conv; blocks are deepest first
                block = self.fuse.weight[:, (n - 1 - i) * e : (n - i) * e, 0, 0] * scale[:, None]
                weight, bias = block @ proj.weight, block @ proj.bias
            folded.append((weight, bias + shift if i == n - 1 else bias))
        return folded

    def fused_features(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The fused map before dropout and classifier (after the fuse conv + BN + ReLU):
        [(B, C_i, H_i, W_i)] -> (B, E, H_0, W_0). SegDeformer's paper mode builds on it."""
        if self.fuse is None:
            fused = self._project_single(features)
        elif self.fused_projection:
            fused = self._fuse_composed(features)
        else:
            fused = self._fuse_literal(features)
        return self.act(self.norm(fused))

    def _project_single(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """One stage: project at its own resolution, then upsample (the literal and composed forms
        coincide)."""
        stage, proj = self.stages[0], self.proj[0]
        x = F.conv2d(features[stage], proj.weight[:, :, None, None], proj.bias)
        if stage > 0:
            x = resize(x, features[0].shape[2:])
        return x

    def _fuse_literal(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Project, upsample, concatenate deepest first, 1x1 fuse: the paper's order of operations."""
        size = features[0].shape[2:]
        projected = []
        for stage, proj in zip(self.stages, self.proj, strict=True):
            x = F.conv2d(features[stage], proj.weight[:, :, None, None], proj.bias)  # a Linear over channels
            if stage > 0:  # decided by position, not by shape, so that export sees no shape test
                x = resize(x, size)
            projected.append(x)
        return self.fuse(torch.cat(projected[::-1], dim=1))

    def _fuse_composed(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The same sum with each stage's projection composed into its slice of the fuse weights."""
        size = features[0].shape[2:]
        e, n = self.config.embed_dim, len(self.stages)
        fuse = self.fuse.weight[:, :, 0, 0]  # (E, n*E); input blocks are deepest first
        out = None
        for i in reversed(range(n)):
            block = fuse[:, (n - 1 - i) * e : (n - i) * e]
            proj, stage = self.proj[i], self.stages[i]
            y = F.conv2d(features[stage], (block @ proj.weight)[:, :, None, None], block @ proj.bias)
            if stage > 0:
                y = resize(y, size)
            out = y if out is None else out.add_(y)  # no backward needs the upsampled sums
        return out
