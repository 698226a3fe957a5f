"""Swin Transformer (Liu et al., 2021) as a segmentation backbone.

A stride-4 patch embedding (conv + LayerNorm), then four stages of pre-norm blocks whose
multi-head self-attention runs inside non-overlapping ``window_size`` x ``window_size`` windows
with a learned relative position bias; every second block shifts the windows by
``window_size // 2`` (a cyclic roll plus an attention mask keeping the wrapped-around regions
apart). Between stages, patch merging concatenates each 2x2 neighbourhood (4C) and reduces it to
2C. No absolute position embedding.

As in the official segmentation backbone (Swin-Transformer-Semantic-Segmentation, also
MMSegmentation and transformers' ``SwinBackbone``), any input size works: the image is zero-padded
at the bottom and right to a multiple of ``patch_size``; each block zero-pads its (normalised)
map to a multiple of the window and crops the result back, so windows are never shrunk and
shifting is never switched off, however small the map; patch merging pads odd sizes by one.
Stage ``i`` in ``out_indices`` goes through its own LayerNorm ``norm{i}`` and is returned as an
NCHW map at stride 4 * 2**i: (B, C * 2**i, ceil(H / (4 * 2**i)), ceil(W / (4 * 2**i))).
The maps cover the padded image, as in MMSegmentation (whose segmentors resize the logits to the
image size, as transeg's inference does); there is no ``pad_multiple`` cropping.

Parameter names are the official ones: ``patch_embed.{proj,norm}``,
``layers.{i}.blocks.{j}.{norm1,attn.qkv,attn.proj,attn.relative_position_bias_table,norm2,mlp.fc1,
mlp.fc2}``, ``layers.{i}.downsample.{reduction,norm}`` (the merging at the end of stage i) and
``norm{i}``. ``relative_position_index`` is a non-persistent buffer (not in the state dict).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transeg.errors import TransegError
from transeg.models.encoders.base import Encoder
from transeg.models.layers.drop import DropPath, linear_rates
from transeg.models.layers.feedforward import FeedForward
from transeg.models.layers.init import init_linear_and_norm

MASK_VALUE = -100.0  # the official code's value for "different region" in shifted windows


@dataclass(frozen=True)
class SwinConfig:
    """A Swin variant. Stage i has ``embed_dim * 2**i`` channels, ``depths[i]`` blocks and
    ``heads[i]`` heads. ``window_size`` is 7 for the ImageNet-1K/22K 224 checkpoints and 12 for
    the 384 ones (used for Swin-B/L in segmentation). ``norm_eps`` is every LayerNorm's eps
    (official code, MMSegmentation and transformers: PyTorch's 1e-5). ``drop_path_rate``: 0.3 is
    the UperNet recipe's value."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: int = 4
    qkv_bias: bool = True
    drop_path_rate: float = 0.3
    patch_size: int = 4
    norm_eps: float = 1e-5
    in_channels: int = 3
    out_indices: tuple[int, ...] = (0, 1, 2, 3)

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.heads) or not self.depths:
            raise TransegError(f"SwinConfig: depths {self.depths} and heads {self.heads} must have the same "
                               "non-zero length")
        for i, heads in enumerate(self.heads):
            if heads < 1 or self.widths[i] % heads:
                raise TransegError(f"SwinConfig: stage {i} width {self.widths[i]} is not divisible by heads {heads}")
        if self.window_size < 1 or self.patch_size < 1:
            raise TransegError(f"SwinConfig: window_size {self.window_size} and patch_size {self.patch_size} "
                               "must be positive")
        n = len(self.depths)
        if not self.out_indices or list(self.out_indices) != sorted(set(self.out_indices)) or \
                not all(0 <= i < n for i in self.out_indices):
            raise TransegError(f"SwinConfig: out_indices {self.out_indices} must be increasing stage indices "
                               f"in 0..{n - 1}")

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each stage."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


def relative_position_index(window_size: int) -> torch.Tensor:
    """(N, N) int64, N = window_size**2: the row of the bias table for each (query, key) pair of a
    window, i.e. (dy + ws - 1) * (2 ws - 1) + (dx + ws - 1), as in the official code."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)  # (2, N)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)  # (N, N, 2)
    return relative[..., 0] * (2 * window_size - 1) + relative[..., 1]


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/ws * W/ws, ws*ws, C), windows in row-major order per image."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(2, 3)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B * H/ws * W/ws, ws*ws, C) -> (B, H, W, C); the inverse of ``window_partition``."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // ws, w // ws, ws, ws, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


def shift_mask(h: int, w: int, ws: int, shift: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(nW, N, N) additive mask of the shifted windows of an (h, w) map (multiples of ``ws``): 0
    between tokens of the same region of the rolled map, -100 between different regions. Regions
    along each axis: [0, h - ws), [h - ws, h - shift), [h - shift, h)."""
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    row_region = (rows >= h - ws).long() + (rows >= h - shift).long()
    col_region = (cols >= w - ws).long() + (cols >= w - shift).long()
    regions = (row_region[:, None] * 3 + col_region[None, :])[None, :, :, None]  # (1, h, w, 1)
    regions = window_partition(regions, ws)[..., 0]  # (nW, N)
    different = regions[:, None, :] != regions[:, :, None]
    return torch.zeros(different.shape, device=device, dtype=dtype).masked_fill(different, MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows, with a relative position bias (and the shift
    mask) added to the logits.
    (B*nW, N, C), mask (nW, N, N) or None -> (B*nW, N, C)."""

    def __init__(self, dim: int, heads: int, window_size: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.window_size = window_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, N, N)."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, self.heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias().unsqueeze(0).to(q.dtype)  # (1, heads, N, N)
        if mask is not None:  # (nW, 1, N, N) + bias, repeated over the images of the batch
            bias = (bias + mask.unsqueeze(1).to(q.dtype)).repeat(bw // mask.shape[0], 1, 1, 1)
        # written out rather than SDPA: windows are small (N = 49 or 144), and the ONNX exporter's
        # decomposition of SDPA with a float mask yields strides its own reshape cannot view
        attn = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5 + bias, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    """Pre-norm block with (shifted) window attention. (B, H, W, C), mask -> (B, H, W, C).

    The normalised map is zero-padded at the bottom and right to a multiple of the window, rolled
    by ``-shift`` (shifted blocks), attended window by window, rolled back and cropped.
    """

    def __init__(self, dim: int, heads: int, window_size: int, shift: int, mlp_ratio: int, qkv_bias: bool,
                 drop_path: float, eps: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, heads, window_size, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = FeedForward(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        ws, s = self.window_size, self.shift
        y = F.pad(self.norm1(x), (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        hp, wp = y.shape[1], y.shape[2]
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, ws), mask if s else None), ws, hp, wp)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + self.drop_path(y[:, :h, :w])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhoods concatenated (x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]),
    LayerNorm, Linear 4C -> 2C without bias; odd sizes are zero-padded by one.
    (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Blocks alternating plain and shifted windows, then (except the last stage) patch merging.
    (B, H, W, C) -> the stage output (B, H, W, C) and the next stage's input (merged, or None)."""

    def __init__(self, cfg: SwinConfig, index: int, drop_paths: list[float]) -> None:
        super().__init__()
        dim, ws = cfg.widths[index], cfg.window_size
        self.window_size = ws
        self.shift = ws // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, cfg.heads[index], ws, 0 if j % 2 == 0 else self.shift, cfg.mlp_ratio, cfg.qkv_bias,
                      dp, cfg.norm_eps)
            for j, dp in enumerate(drop_paths)
        )
        self.downsample = PatchMerging(dim, cfg.norm_eps) if index < len(cfg.depths) - 1 else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        ws = self.window_size
        h, w = x.shape[1], x.shape[2]
        mask = None
        if len(self.blocks) > 1 and self.shift:
            hp, wp = h + (ws - h % ws) % ws, w + (ws - w % ws) % ws
            mask = shift_mask(hp, wp, ws, self.shift, x.device, x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return x, (self.downsample(x) if self.downsample is not None else None)


class SwinPatchEmbed(nn.Module):
    """Zero-pad to a multiple of p, stride-p conv, LayerNorm. (B, C_in, H, W) -> (B, H/p, W/p, D)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, eps: float) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = x.shape[-2:]
        x = self.proj(F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p)))
        return self.norm(x.permute(0, 2, 3, 1))


class SwinTransformer(Encoder):
    """The Swin encoder. (B, 3, H, W) -> NCHW maps of the ``out_indices`` stages, at strides
    ``patch_size * 2**i`` (4, 8, 16, 32)."""

    # torch.export's symbolic shapes drown in the per-stage padding and window arithmetic (still
    # simplifying after 10 minutes for Swin-T): ONNX export takes a fixed input size
    onnx_dynamic_size = False

    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        self.config = cfg
        self.patch_embed = SwinPatchEmbed(cfg.in_channels, cfg.embed_dim, cfg.patch_size, cfg.norm_eps)
        rates = linear_rates(cfg.drop_path_rate, sum(cfg.depths))
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.layers = nn.ModuleList(
            SwinStage(cfg, i, rates[starts[i] : starts[i] + d]) for i, d in enumerate(cfg.depths)
        )
        for i in cfg.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(cfg.widths[i], eps=cfg.norm_eps))
        self.out_channels: tuple[int, ...] = tuple(cfg.widths[i] for i in cfg.out_indices)
        self.strides: tuple[int, ...] = tuple(cfg.patch_size * 2**i for i in cfg.out_indices)
        self.layers.apply(init_linear_and_norm)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        features = []
        outputs = set(self.config.out_indices)
        for i, layer in enumerate(self.layers):
            out, x = layer(x)
            if i in outputs:
                features.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous())
            if x is None or i >= self.config.out_indices[-1]:
                break
        return features


