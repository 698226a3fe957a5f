"""Mix Transformer (MiT), the SegFormer encoder (Xie et al., 2021).

Four stages, each: overlapped patch embedding (strided conv + LayerNorm), transformer blocks with
efficient self-attention (K/V spatially reduced by a strided conv) and Mix-FFN, then a LayerNorm.
No positional encoding, so any input size works.

For the paper's ablation of Mix-FFN against positional encoding (Table 1c) two options change
that: ``pos_embed`` adds learned absolute position embeddings after every stage's patch embedding
(as PVT, on which MiT is built), learned for one input size and resized bilinearly to others, and
``mix_ffn=False`` drops the 3x3 depthwise conv from the FFN. Both are off by default; the
parameters they add (``stages.{i}.pos_embed``) or remove (``mlp.dwconv``) exist only when set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transeg.errors import TransegError
from transeg.models.encoders.base import Encoder
from transeg.models.layers.attention import attention
from transeg.models.layers.cache import DerivedTensorCache, is_tracing
from transeg.models.layers.drop import DropPath, drop_path_rates
from transeg.models.layers.init import init_transformer_weights
from transeg.models.layers.pos_embed import resize_pos_embed


@dataclass(frozen=True)
class MiTConfig:
    """A MiT variant. ``norm_eps`` is used by the block and stage-end LayerNorms, ``embed_norm_eps``
    by the patch-embedding and spatial-reduction LayerNorms (official code: 1e-6 and 1e-5;
    Hugging Face transformers: 1e-5 for both).

    Ablation options (SegFormer Table 1c; defaults give the published MiT): ``pos_embed`` adds
    learned absolute position embeddings after each stage's patch embedding, as PVT does; their
    tables have the grid of each stage for an input of ``pos_embed_size`` (H, W), and are resized
    bilinearly for other inputs. ``mix_ffn=False`` gives a plain FFN (fc1 -> GELU -> fc2).
    """

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
    pos_embed: bool = False
    pos_embed_size: tuple[int, int] = (512, 512)
    mix_ffn: bool = True

    def __post_init__(self) -> None:
        size = self.pos_embed_size
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
            raise TransegError(f"MiTConfig: pos_embed_size must be two positive integers (H, W), got {size!r}")

    def stage_grids(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        """The (h, w) feature grid of every stage for an (H, W) input (each patch embedding is a
        conv with padding k // 2)."""
        grids, (h, w) = [], size
        for k, s in zip(self.patch_sizes, self.strides, strict=True):
            h, w = (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1
            grids.append((h, w))
        return grids

    def min_input_size(self) -> int:
        """The smallest H (and W) the encoder runs on: each spatial-reduction conv (kernel = stride =
        sr, no padding) needs a stage grid of at least sr x sr. 29 for the published MiT
        (ceil(29 / 4) = 8 = the stage-1 ratio; 28 gives a 7 x 7 grid)."""
        size = 1
        while any(grid[0] < sr for grid, sr in zip(self.stage_grids((size, size)), self.sr_ratios, strict=True)):
            size += 1
        return size


def token_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W), a channels-last view: no copy."""
    return x.unflatten(1, (h, w)).permute(0, 3, 1, 2)


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C); no copy when ``x`` is channels-last, which convolutions keep
    for channels-last inputs (one copy for the contiguous image-sized input of stage 1)."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


class OverlapPatchEmbed(nn.Module):
    """Strided conv with padding k//2, then LayerNorm. (B, C_in, H, W) -> (B, H'*W', C), H', W'."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, stride: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[2:]
        return self.norm(tokens(x)), h, w


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
        kv_in = self.norm(tokens(self.sr(token_map(x, h, w)))) if self.sr_ratio > 1 else x
        k, v = self.kv(kv_in).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MixFFN(nn.Module):
    """fc1 -> 3x3 depthwise conv on the hidden width -> GELU -> fc2. (B, N, C) -> (B, N, C).

    With ``conv=False``: fc1 -> GELU -> fc2, a plain transformer FFN (no ``dwconv`` parameters)."""

    def __init__(self, dim: int, hidden: int, conv: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden) if conv else None
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(x)
        if self.dwconv is not None:
            x = tokens(self.dwconv(token_map(x, h, w)))
        return self.fc2(self.act(x))


class MiTBlock(nn.Module):
    """Pre-norm transformer block. (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, heads: int, sr_ratio: int, mlp_ratio: int, drop_path: float,
                 eps: float, embed_eps: float, mix_ffn: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientSelfAttention(dim, heads, sr_ratio, embed_eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MixFFN(dim, dim * mlp_ratio, conv=mix_ffn)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MiTStage(nn.Module):
    """Patch embedding (+ position embeddings if enabled), blocks, LayerNorm.
    (B, C_in, H, W) -> (B, C, H/stride, W/stride)."""

    def __init__(self, cfg: MiTConfig, index: int, in_channels: int, drop_paths: list[float]) -> None:
        super().__init__()
        dim = cfg.widths[index]
        self.patch_embed = OverlapPatchEmbed(
            in_channels, dim, cfg.patch_sizes[index], cfg.strides[index], cfg.embed_norm_eps
        )
        self.pos_grid: tuple[int, int] | None = None
        self._pos_cache = DerivedTensorCache()
        if cfg.pos_embed:
            self.pos_grid = cfg.stage_grids(cfg.pos_embed_size)[index]
            self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid[0] * self.pos_grid[1], dim))
        self.blocks = nn.ModuleList(
            MiTBlock(dim, cfg.heads[index], cfg.sr_ratios[index], cfg.mlp_ratio, dp, cfg.norm_eps,
                     cfg.embed_norm_eps, cfg.mix_ffn)
            for dp in drop_paths
        )
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1, h*w, C) for an (h, w) grid: the table itself at its own grid, else resized bilinearly
        (align_corners=False), cached outside autograd; under tracing, compiling or export the resize
        always runs (the identity at the learned grid), so that the graph has no shape test."""
        pos = self.pos_embed
        if not is_tracing() and tuple(grid) == self.pos_grid:
            return pos
        return self._pos_cache.get([pos], lambda: resize_pos_embed(pos, self.pos_grid, grid, 0), tuple(grid))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = self.patch_embed(x)
        if self.pos_grid is not None:
            x = x + self.position_embedding((h, w))
        for block in self.blocks:
            x = block(x, h, w)
        return token_map(self.norm(x), h, w)


class MixTransformer(Encoder):
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
        self.min_input_size = cfg.min_input_size()
        self.apply(init_transformer_weights)
        if cfg.pos_embed:
            for stage in self.stages:
                nn.init.trunc_normal_(stage.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
