"""Patch attention maps of a ViT encoder (Segmenter, Fig. 1).

Fig. 1 of Segmenter shows, for a few patches, where the first encoder layer attends. The model runs
its attention through SDPA, which never forms the weights, so this module takes the input of one
block's attention (the tokens after ``norm1``, caught by a forward pre-hook while the encoder runs
as usual, in eval mode) and recomputes that layer's weights explicitly from its ``qkv`` Linear:

    q, k = the (heads, N, d) query and key of the N = E + h*w tokens (E class/distillation tokens)
    A = softmax(q_i k^T / sqrt(d))   for the query token i of patch (y, x): i = E + y * w + x

A row of A sums to 1 over all N tokens; ``PatchAttention.maps`` holds its h*w patch entries as
(heads, h, w) and ``PatchAttention.extra`` its E entries. Layers count from 0 (``blocks.0`` is the
first, that of Fig. 1); patches are (row, column) on the encoder's patch grid, ceil(H/p) x ceil(W/p)
(the input is zero-padded at the bottom and right to whole patches).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from transeg.analysis.erf import check_size
from transeg.data.images import read_image
from transeg.data.transforms import resize_image
from transeg.errors import TransegError
from transeg.inference.modes import normalize
from transeg.models.encoders.vit import VisionTransformer
from transeg.models.segmentor import Segmentor
from transeg.viz import colormap

MARK_RGB = (255, 32, 32)
GAP = 4  # pixels between the panels of the grid


@dataclass
class PatchAttention:
    """One query patch's attention weights in one layer; ``maps`` (heads, h, w) and ``extra``
    (heads, E) together sum to 1 per head."""

    maps: torch.Tensor
    extra: torch.Tensor
    patch: tuple[int, int]
    layer: int
    patch_size: int

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.maps.shape[1]), int(self.maps.shape[2])


def vit_encoder(model: Segmentor) -> VisionTransformer:
    """The model's ViT encoder; a TransegError for any other encoder."""
    if not isinstance(model.encoder, VisionTransformer):
        raise TransegError(f"attention maps need a ViT encoder (Segmenter); this model's encoder is "
                           f"{type(model.encoder).__name__}")
    return model.encoder


def block_input(encoder: VisionTransformer, x: torch.Tensor, layer: int) -> torch.Tensor:
    """(1, 3, H, W) normalised image -> the (N, C) tokens entering block ``layer``'s attention (after
    its ``norm1``), the encoder run in eval mode without gradients."""
    captured: list[torch.Tensor] = []
    hook = encoder.blocks[layer].attn.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            encoder(x)
    finally:
        hook.remove()
        encoder.train(was_training)
    return captured[0][0]


def patch_attention(model: Segmentor, x: torch.Tensor, patch: tuple[int, int], layer: int = 0) -> PatchAttention:
    """The attention of patch (y, x) over all tokens in encoder block ``layer``, per head, for one
    (1, 3, H, W) normalised image."""
    encoder = vit_encoder(model)
    depth = len(encoder.blocks)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < depth:
        raise TransegError(f"layer {layer!r} is out of range: the encoder has blocks 0 … {depth - 1}")
    if x.ndim != 4 or x.shape[:2] != (1, 3):
        raise TransegError(f"attention maps take one (1, 3, H, W) image, got {tuple(x.shape)}")
    p = encoder.patch_size
    grid = (math.ceil(x.shape[2] / p), math.ceil(x.shape[3] / p))
    y, col = patch
    if not (0 <= y < grid[0] and 0 <= col < grid[1]):
        raise TransegError(f"patch ({y}, {col}) is outside the {grid[0]}x{grid[1]} patch grid "
                           f"(rows 0 … {grid[0] - 1}, columns 0 … {grid[1] - 1})")
    tokens = block_input(encoder, x, layer)
    attn = encoder.blocks[layer].attn
    n, c = tokens.shape
    heads, extra = attn.heads, encoder.num_extra_tokens
    with torch.no_grad():
        q, k, _ = attn.qkv(tokens).reshape(n, 3, heads, c // heads).permute(1, 2, 0, 3)  # (heads, N, d) each
        query = q[:, extra + y * grid[1] + col]  # (heads, d)
        weights = torch.softmax(torch.einsum("hd,hnd->hn", query, k) / math.sqrt(c // heads), dim=-1)
    weights = weights.float().cpu()
    return PatchAttention(weights[:, extra:].reshape(heads, *grid), weights[:, :extra], (y, col), layer, p)


def attention_of_file(model: Segmentor, path: Path, patch: tuple[int, int], layer: int = 0,
                      size: tuple[int, int] | None = None) -> tuple[PatchAttention, np.ndarray]:
    """``patch_attention`` on an image file, resized to ``size`` (H, W) if given and normalised with
    the model's mean and std, on the model's device; also returns the (H, W, 3) uint8 image the model saw."""
    image = read_image(path)
    size = check_size(size or image.shape[:2], vit_encoder(model).patch_size, f"{path}: the attention input size")
    shown = np.array(resize_image(image, *size))
    x = normalize(shown, model.config.mean, model.config.std).to(next(model.parameters()).device)
    return patch_attention(model, x, patch, layer), shown


def mark_patch(picture: Image.Image, patch: tuple[int, int], patch_size: int) -> Image.Image:
    """``picture`` with a square outline around patch (y, x)."""
    y, x = patch
    draw = ImageDraw.Draw(picture)
    draw.rectangle([x * patch_size, y * patch_size, (x + 1) * patch_size - 1, (y + 1) * patch_size - 1],
                   outline=MARK_RGB, width=max(1, patch_size // 8))
    return picture


def head_picture(weights: torch.Tensor, image: np.ndarray, patch: tuple[int, int], patch_size: int,
                 alpha: float = 0.7) -> Image.Image:
    """One head's (h, w) weights divided by their maximum, coloured, each patch's colour spread over
    its p x p pixels, cropped to the (H, W, 3) image, blended over it with ``alpha``, the patch marked."""
    values = weights.double().cpu().numpy()
    peak = float(values.max())
    heat = colormap(values / peak if peak > 0 else values)
    heat = heat.repeat(patch_size, axis=0).repeat(patch_size, axis=1)[: image.shape[0], : image.shape[1]]
    blend = np.rint((1 - alpha) * image.astype(np.float64) + alpha * heat).astype(np.uint8)
    return mark_patch(Image.fromarray(blend), patch, patch_size)


def grid_picture(panels: list[Image.Image]) -> Image.Image:
    """Panels of one size in rows of ceil(sqrt(n)), ``GAP`` white pixels apart."""
    columns = math.ceil(math.sqrt(len(panels)))
    rows = math.ceil(len(panels) / columns)
    w, h = panels[0].size
    sheet = Image.new("RGB", (columns * w + (columns - 1) * GAP, rows * h + (rows - 1) * GAP), (255, 255, 255))
    for i, panel in enumerate(panels):
        sheet.paste(panel, ((i % columns) * (w + GAP), (i // columns) * (h + GAP)))
    return sheet


def summary(result: PatchAttention, source: str = "") -> dict[str, Any]:
    """What ``attention.json`` holds: the setting and, per head, its weight on the extra tokens,
    its largest patch weight and where that patch is."""
    heads = []
    for i, (maps, extra) in enumerate(zip(result.maps, result.extra, strict=True)):
        top = int(torch.argmax(maps))
        heads.append({"head": i, "extra_tokens_weight": round(float(extra.sum()), 6),
                      "max_patch_weight": round(float(maps.max()), 6),
                      "max_patch": [top // result.grid[1], top % result.grid[1]], "file": f"head_{i:02d}.png"})
    return {**({"image": source} if source else {}), "layer": result.layer, "patch": list(result.patch),
            "grid": list(result.grid), "patch_size": result.patch_size,
            "weights": "softmax(q k^T / sqrt(d)) of the patch's query over all tokens of the layer",
            "heads": heads}


def write_outputs(result: PatchAttention, image: np.ndarray, out_dir: Path, source: str = "") -> list[Path]:
    """``head_XX.png`` per head, ``attention.png`` (the image with the patch marked, then every
    head) and ``attention.json`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = [mark_patch(Image.fromarray(image), result.patch, result.patch_size)]
    written = []
    for i, maps in enumerate(result.maps):
        panels.append(head_picture(maps, image, result.patch, result.patch_size))
        written.append(out_dir / f"head_{i:02d}.png")
        panels[-1].save(written[-1])
    grid_picture(panels).save(out_dir / "attention.png")
    (out_dir / "attention.json").write_text(json.dumps(summary(result, source), indent=2))
    return [*written, out_dir / "attention.png", out_dir / "attention.json"]
