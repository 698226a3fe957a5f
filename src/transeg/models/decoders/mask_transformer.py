"""Segmenter's mask transformer decoder (Strudel et al., 2021, Sec. 3.2).

Patch embeddings are projected to ``d_model`` (``proj_dec``); K learnable class embeddings
(``cls_emb``) are appended after them, and the joint sequence goes through ``n_layers`` pre-norm
transformer blocks and ``decoder_norm``. Patch and class outputs are multiplied by the raw
(d, d) matrices ``proj_patch`` and ``proj_classes`` (as ``x @ W``), L2-normalised, and their
scalar products give K masks per patch, normalised over the classes by ``mask_norm``
(a LayerNorm of width K): (B, N, K) -> (B, K, h, w).

Parameter names are the official Segmenter's; MMSegmentation stores ``patch_proj`` and
``classes_proj`` as bias-free Linears, i.e. the transposes of ``proj_patch`` and ``proj_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transeg.errors import TransegError
from transeg.models.decoders.base import Decoder
from transeg.models.layers.drop import linear_rates
from transeg.models.layers.init import init_transformer_weights
from transeg.models.layers.transformer import TransformerBlock


@dataclass(frozen=True)
class MaskTransformerConfig:
    """``d_model`` None: the encoder's width; ``heads`` None: d_model // 64 (at least 1).
    ``norm_eps`` is that of every decoder LayerNorm (official and MMSegmentation: 1e-5)."""

    n_layers: int = 2
    d_model: int | None = None
    heads: int | None = None
    mlp_ratio: int = 4
    dropout: float = 0.1
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-5


class MaskTransformer(Decoder):
    """[..., (B, C, h, w)] -> masks (B, K, h, w), from the last feature map."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, cfg: MaskTransformerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.num_classes = num_classes
        d = cfg.d_model or in_channels[-1]
        heads = cfg.heads or max(1, d // 64)
        if d % heads:
            raise TransegError(f"MaskTransformerConfig: d_model {d} is not divisible by heads {heads}")
        self.proj_dec = nn.Linear(in_channels[-1], d)
        rates = linear_rates(cfg.drop_path_rate, cfg.n_layers)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, heads, cfg.mlp_ratio, r, cfg.norm_eps, dropout=cfg.dropout) for r in rates
        )
        self.decoder_norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, d))
        self.proj_patch = nn.Parameter(d**-0.5 * torch.randn(d, d))
        self.proj_classes = nn.Parameter(d**-0.5 * torch.randn(d, d))
        self.mask_norm = nn.LayerNorm(num_classes, eps=cfg.norm_eps)
        self.apply(init_transformer_weights)
        nn.init.trunc_normal_(self.cls_emb, std=0.02)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        b, _, h, w = x.shape
        x = self.proj_dec(x.flatten(2).transpose(1, 2))  # (B, N, d)
        x = torch.cat([x, self.cls_emb.expand(b, -1, -1)], dim=1)  # classes after the patches
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        patches, classes = x[:, : -self.num_classes], x[:, -self.num_classes :]
        patches = F.normalize(patches @ self.proj_patch, dim=-1)
        classes = F.normalize(classes @ self.proj_classes, dim=-1)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # (B, N, K)
        return masks.transpose(1, 2).reshape(b, self.num_classes, h, w)
