"""Vision Transformer (ViT / DeiT), the Segmenter encoder (Strudel et al., 2021).

Patch embedding (a stride-p conv), a class token (and a DeiT distillation token), learned position
embeddings, pre-norm transformer blocks and a final LayerNorm. The input is zero-padded at the
bottom and right to a multiple of the patch size; the position embeddings, learned for the
``image_size`` grid, are resized to the input's grid (bilinear, align_corners=False, as the
official Segmenter does). The extra tokens are dropped and the patch tokens returned as NCHW
maps over the padded grid: (B, D, ceil(H/p), ceil(W/p)). ``Segmentor`` undoes the padding on the
logits (see ``Segmentor.unpad``).

Parameter names are timm's and the official Segmenter's: ``cls_token``, ``dist_token``,
``pos_embed``, ``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transeg.errors import TransegError
from transeg.models.encoders.base import Encoder
from transeg.models.layers.cache import DerivedTensorCache, is_tracing
from transeg.models.layers.drop import linear_rates
from transeg.models.layers.init import init_transformer_weights
from transeg.models.layers.pos_embed import resize_pos_embed
from transeg.models.layers.transformer import TransformerBlock

POS_INTERPOLATIONS = ("bilinear", "bicubic")


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class ViTConfig:
    """A ViT variant.

    ``image_size`` is the (H, W) or square size the position embeddings are learned at; other
    sizes resize them with ``pos_interpolation`` ("bilinear": official Segmenter; "bicubic":
    MMSegmentation and transformers). ``norm_eps`` is every LayerNorm's eps (timm and MMSegmentation
    ViTs: 1e-6; official Segmenter: 1e-5, PyTorch's default; transformers: its ``layer_norm_eps``,
    1e-12 by default). ``out_indices`` are the blocks whose outputs are returned, in increasing
    order; the last must be the final block, whose output goes through the final LayerNorm.
    ``dropout`` is the official Segmenter's encoder dropout (its ``--dropout``, Table 2 of the
    paper): on the tokens after the position embeddings, on the attention weights, after the
    attention projection and after each MLP layer. ``drop_path_rate`` is the stochastic depth of
    the last block, rising linearly from 0 over the blocks.
    """

    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: int = 4
    image_size: int | tuple[int, int] = 512
    distilled: bool = False
    drop_path_rate: float = 0.1
    dropout: float = 0.0
    norm_eps: float = 1e-6
    in_channels: int = 3
    out_indices: tuple[int, ...] = (-1,)
    pos_interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.embed_dim % self.heads:
            raise TransegError(f"ViTConfig: embed_dim {self.embed_dim} is not divisible by heads {self.heads}")
        for key in ("dropout", "drop_path_rate"):
            if not 0 <= getattr(self, key) < 1:
                raise TransegError(f"ViTConfig: {key} {getattr(self, key)} is not in [0, 1)")
        size = _pair(self.image_size)
        if size[0] % self.patch_size or size[1] % self.patch_size:
            raise TransegError(f"ViTConfig: image_size {self.image_size} is not a multiple of "
                               f"patch_size {self.patch_size}")
        if self.pos_interpolation not in POS_INTERPOLATIONS:
            raise TransegError(f"ViTConfig: pos_interpolation {self.pos_interpolation!r} is not one of "
                               f"{POS_INTERPOLATIONS}")
        blocks = self.block_indices
        if not blocks or any(b < 0 or b >= self.depth for b in blocks):
            raise TransegError(f"ViTConfig: out_indices {self.out_indices} out of range for depth {self.depth}")
        if list(blocks) != sorted(set(blocks)) or blocks[-1] != self.depth - 1:
            raise TransegError(f"ViTConfig: out_indices {self.out_indices} must increase and end with the "
                               f"final block ({self.depth - 1} or -1)")

    @property
    def block_indices(self) -> tuple[int, ...]:
        """``out_indices`` with negative indices resolved."""
        return tuple(i + self.depth if i < 0 else i for i in self.out_indices)

    @property
    def grid(self) -> tuple[int, int]:
        """The patch grid the position embeddings are learned for."""
        h, w = _pair(self.image_size)
        return h // self.patch_size, w // self.patch_size

    @property
    def num_extra_tokens(self) -> int:
        return 2 if self.distilled else 1


class ViTPatchEmbed(nn.Module):
    """Non-overlapping p x p patches by a stride-p conv. (B, C_in, H, W) -> (B, D, H/p, W/p)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class VisionTransformer(Encoder):
    """The ViT encoder. (B, 3, H, W) -> [(B, D, ceil(H/p), ceil(W/p))] * len(out_indices)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.pad_multiple = cfg.patch_size  # declared for Segmentor.unpad
        self.grid = cfg.grid
        self.num_extra_tokens = cfg.num_extra_tokens
        self.patch_embed = ViTPatchEmbed(cfg.in_channels, d, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if cfg.distilled:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_extra_tokens + self.grid[0] * self.grid[1], d))
        self.pos_drop = nn.Dropout(cfg.dropout)
        rates = linear_rates(cfg.drop_path_rate, cfg.depth)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, cfg.heads, cfg.mlp_ratio, r, cfg.norm_eps, dropout=cfg.dropout) for r in rates
        )
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        n_out = len(cfg.out_indices)
        self.out_channels: tuple[int, ...] = (d,) * n_out
        self.strides: tuple[int, ...] = (cfg.patch_size,) * n_out
        self._outputs = frozenset(cfg.block_indices)
        self._pos_cache = DerivedTensorCache()
        for p in (self.pos_embed, self.cls_token, *([self.dist_token] if cfg.distilled else [])):
            nn.init.trunc_normal_(p, std=0.02)
        self.blocks.apply(init_transformer_weights)
        self.norm.apply(init_transformer_weights)

    def extra_tokens(self, batch: int) -> torch.Tensor:
        """(B, E, D): the class token, then the distillation token if any."""
        tokens = [self.cls_token, self.dist_token] if self.config.distilled else [self.cls_token]
        return torch.cat(tokens, dim=1).expand(batch, -1, -1)

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1, E + h*w, D) for an (h, w) patch grid. Resized embeddings are cached outside autograd
        (``DerivedTensorCache``). Under tracing, compiling or export the resize always runs (the
        identity at the learned grid), so that the graph has no shape test."""
        if not is_tracing() and tuple(grid) == self.grid:  # traced: always resize (exact at the same size)
            return self.pos_embed
        pos = self.pos_embed
        return self._pos_cache.get(
            [pos], lambda: resize_pos_embed(pos, self.grid, grid, self.num_extra_tokens, self.config.pos_interpolation),
            tuple(grid))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, _, h, w = x.shape
        p = self.patch_size
        x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))  # zeros at the bottom and right
        x = self.patch_embed(x)
        grid = (x.shape[2], x.shape[3])
        x = torch.cat([self.extra_tokens(b), x.flatten(2).transpose(1, 2)], dim=1)
        x = self.pos_drop(x + self.position_embedding(grid))
        features = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == last:
                x = self.norm(x)
            if i in self._outputs:
                tokens = x[:, self.num_extra_tokens:]
                features.append(tokens.transpose(1, 2).reshape(b, -1, grid[0], grid[1]))
        return features
