"""Mix Transformer (MiT), the SegFormer encoder (Xie et al., 2021).

Four stages, each: overlapped patch embedding (strided conv + LayerNorm), transformer blocks with
efficient self-attention (K/V spatially reduced by a strided conv) and Mix-FFN, then a LayerNorm.
No positional encoding, so any input size works.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transeg.models.layers import DropPath, drop_path_rates, init_transformer_weights


@dataclass(frozen=True)
class MiTConfig:
    """A MiT variant. ``norm_eps`` is used by the block and stage-end LayerNorms, ``embed_norm_eps``
    by the patch-embedding and spatial-reduction LayerNorms (official code: 1e-6 and 1e-5;
    Hugging Face transformers: 1e-5 for both)."""

    widths: tuple[int, ...] = (32, 64, 160, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    strides: tuple[int, ...] = (4, 2, 2, 2)
    mlp_ratio: int = 4
    in_channels: int = 3
    drop_path_rate: float = 0.1
    norm_eps: float = 1e-6
    embed_norm_eps: float = 1e-5


class OverlapPatchEmbed(nn.Module):
    """Strided conv with padding k//2, then LayerNorm. (B, C_in, H, W) -> (B, H'*W', C), H', W'."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, stride: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys and values come from a sequence shortened sr² times by a
    stride-sr conv + LayerNorm. (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, heads: int, sr_ratio: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        if self.sr_ratio > 1:
            reduced = self.sr(x.transpose(1, 2).reshape(b, c, h, w))
            kv_in = self.norm(reduced.flatten(2).transpose(1, 2))
        else:
            kv_in = x
        k, v = self.kv(kv_in).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MixFFN(nn.Module):
    """fc1 -> 3x3 depthwise conv on the hidden width -> GELU -> fc2. (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(x)
        b, _, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return self.fc2(self.act(x))


class MiTBlock(nn.Module):
    """Pre-norm transformer block. (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, heads: int, sr_ratio: int, mlp_ratio: int, drop_path: float,
                 eps: float, embed_eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientSelfAttention(dim, heads, sr_ratio, embed_eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MiTStage(nn.Module):
    """Patch embedding, blocks, LayerNorm. (B, C_in, H, W) -> (B, C, H/stride, W/stride)."""

    def __init__(self, cfg: MiTConfig, index: int, in_channels: int, drop_paths: list[float]) -> None:
        super().__init__()
        dim = cfg.widths[index]
        self.patch_embed = OverlapPatchEmbed(
            in_channels, dim, cfg.patch_sizes[index], cfg.strides[index], cfg.embed_norm_eps
        )
        self.blocks = nn.ModuleList(
            MiTBlock(dim, cfg.heads[index], cfg.sr_ratios[index], cfg.mlp_ratio, dp, cfg.norm_eps,
                     cfg.embed_norm_eps)
            for dp in drop_paths
        )
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = self.patch_embed(x)
        for block in self.blocks:
            x = block(x, h, w)
        return self.norm(x).transpose(1, 2).reshape(x.shape[0], -1, h, w)


class MixTransformer(nn.Module):
    """The MiT encoder. (B, 3, H, W) -> four NCHW maps at strides 4, 8, 16, 32."""

    def __init__(self, cfg: MiTConfig) -> None:
        super().__init__()
        self.config = cfg
        rates = drop_path_rates(cfg.drop_path_rate, cfg.depths)
        in_channels = (cfg.in_channels, *cfg.widths[:-1])
        self.stages = nn.ModuleList(
            MiTStage(cfg, i, in_channels[i], rates[i]) for i in range(len(cfg.depths))
        )
        self.out_channels: tuple[int, ...] = tuple(cfg.widths)
        strides, total = [], 1
        for s in cfg.strides:
            total *= s
            strides.append(total)
        self.strides: tuple[int, ...] = tuple(strides)
        self.apply(init_transformer_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
