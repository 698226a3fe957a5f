"""Cross-entropy of bilinearly upsampled logits, computed in row chunks.

The reference formulation upsamples the (B, K, h, w) logits to the (B, H, W) labels' size
(bilinear, align_corners=False), takes log_softmax over K and the NLL of the labels, ignoring 255:
its forward keeps the (B, K, H, W) logits and log-probabilities for the backward, and the backward
builds two more tensors of that size. :class:`ChunkedUpsampleCE` never
holds more than one chunk of output rows at full resolution: per image it upsamples the logits
along the width, then per chunk of output rows interpolates the two input rows of each (the taps
and weights of ``F.interpolate``), reduces them to per-pixel losses and, in the same pass, forms
``softmax - onehot`` and scatters it back onto the low-resolution logits through the
interpolation's adjoint. Only that (B, K, h, w) gradient is kept for the backward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from transeg.data.labels import IGNORE_INDEX

#: output rows per chunk: 150 classes × 16 rows × 512 columns × 4 bytes = 5 MB at 512 wide, so that a
#: chunk's logits and softmax stay in a 32 MB L3 cache (32 rows measured 4-6% slower on B0's loss)
CHUNK_ROWS = 16
#: target probabilities below this (fp32 subnormals start at 1.2e-38) get log_softmax's exact value
TINY_PROB = 1e-30


def _taps(out_size: int, in_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The bilinear (align_corners=False) taps of ``out_size`` outputs over ``in_size`` inputs:
    (lower index, upper index, upper weight), each (out_size,), as ``F.interpolate`` computes them."""
    scale = in_size / out_size
    src = ((torch.arange(out_size, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    low = src.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    return low, high, src - low


def _row_matrix(out_size: int, in_size: int, device: torch.device) -> torch.Tensor:
    """The (out_size, in_size) matrix of the bilinear interpolation along one axis (two taps a row)."""
    low, high, frac = _taps(out_size, in_size, device)
    matrix = torch.zeros(out_size, in_size, device=device)
    rows = torch.arange(out_size, device=device)
    matrix.index_put_((rows, low), 1 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix


def _source_rows(matrix: torch.Tensor, rows: slice) -> slice:
    """The input rows that the output ``rows`` of the interpolation ``matrix`` read."""
    used = matrix[rows].sum(0).nonzero()[:, 0]
    return slice(int(used[0]), int(used[-1]) + 1)


def _widen(image: torch.Tensor, width: int) -> torch.Tensor:
    """(1, K, h, w) channels-last logits of one image -> (h, W, K) contiguous, upsampled along the width."""
    wide = F.interpolate(image, size=(image.shape[2], width), mode="bilinear", align_corners=False)
    return wide[0].permute(1, 2, 0)


def _chunks(matrix: torch.Tensor, chunk_rows: int) -> list[tuple[slice, slice, torch.Tensor]]:
    """(output rows, input rows, (R, r) interpolation block) of each chunk of ``chunk_rows`` output rows."""
    out = []
    for start in range(0, matrix.shape[0], chunk_rows):
        rows = slice(start, min(start + chunk_rows, matrix.shape[0]))
        src = _source_rows(matrix, rows)
        out.append((rows, src, matrix[rows, src].contiguous()))
    return out


def _pixel_weights(labels: torch.Tensor, class_weight: torch.Tensor | None, ignore_index: int) -> torch.Tensor:
    """(R, W) labels -> (R, W) fp32 pixel weights: the class weight of the label (1 without), 0 if ignored."""
    valid = labels != ignore_index
    if class_weight is None:
        return valid.float()
    return class_weight[labels.clamp(max=class_weight.numel() - 1)] * valid


def _target_log_prob(up: torch.Tensor, prob: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(R, W, K) logits, their softmax, (R, W, 1) target indices -> (R, W) log-probabilities of the
    targets: the log of the gathered probability (one exp per element in all, not log_softmax's exp
    and the gradient's second), and log_softmax for the pixels whose probability is below
    ``TINY_PROB``, where the softmax has lost the digits or underflowed."""
    target_prob = prob.gather(-1, index)[..., 0]
    log_prob = target_prob.log()
    tiny = (target_prob < TINY_PROB).nonzero(as_tuple=True)
    if tiny[0].numel():
        log_prob[tiny] = torch.log_softmax(up[tiny], dim=-1).gather(-1, index[tiny])[..., 0]
    return log_prob


class ChunkedUpsampleCE(torch.autograd.Function):
    """(B, K, h, w) logits, (B, H, W) labels -> Σ_i w[y_i] · -log softmax(up(z))_i[y_i] / divisor.

    Per image the logits are first upsampled along the width, (h, W, K) (a quarter of the full
    resolution at a 4× upsampling); each chunk of output rows is then a small matmul of its
    (R, r) block of the row-interpolation matrix with the r input rows it reads. The gradient is
    formed in the same pass, while the chunk's softmax is at hand (``w_i (softmax_i - onehot_i)``,
    scattered back through the two interpolations' adjoints), so the backward only scales it."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, labels: torch.Tensor, divisor: torch.Tensor,
                class_weight: torch.Tensor | None, ignore_index: int, chunk_rows: int) -> torch.Tensor:
        z = logits.float().contiguous(memory_format=torch.channels_last)
        batch, classes, h, w = z.shape
        height, width = labels.shape[-2:]
        chunks = _chunks(_row_matrix(height, h, z.device), chunk_rows)
        want_grad = logits.requires_grad
        grad = z.new_empty(batch, h, w, classes) if want_grad else None
        total = z.new_zeros(())
        for b in range(batch):
            wide = _widen(z[b:b + 1], width)  # (h, W, K)
            d_wide = torch.zeros_like(wide) if want_grad else None
            for rows, src, block in chunks:
                up = (block @ wide[src].reshape(block.shape[1], -1)).view(block.shape[0], width, classes)
                target = labels[b, rows]
                index = target.clamp(max=classes - 1)[..., None]
                weights = _pixel_weights(target, class_weight, ignore_index)  # (R, W)
                prob = torch.softmax(up, dim=-1)
                total -= (_target_log_prob(up, prob, index) * weights).sum()
                if want_grad:
                    prob.scatter_add_(-1, index, prob.new_full((), -1.0).expand_as(index))
                    if class_weight is None:  # weights are 1 or 0: clear the ignored pixels only
                        prob.view(-1, classes)[(weights.view(-1) == 0).nonzero()[:, 0]] = 0
                    else:
                        prob.mul_(weights[..., None])
                    d_wide[src].view(block.shape[1], -1).addmm_(block.T, prob.view(block.shape[0], -1))
            if want_grad:  # the width interpolation's adjoint: (1, K, h, W) -> (1, K, h, w), channels-last
                adjoint = torch.ops.aten.upsample_bilinear2d_backward(
                    d_wide.permute(2, 0, 1)[None], (h, width), (1, classes, h, w), False)
                grad[b] = adjoint[0].permute(1, 2, 0)
        scale = 1 / divisor.clamp(min=1)
        if want_grad:
            ctx.save_for_backward(grad, scale)
        ctx.dtype = logits.dtype
        return total * scale

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad, scale = ctx.saved_tensors
        return (grad * (grad_out * scale)).permute(0, 3, 1, 2).to(ctx.dtype), None, None, None, None, None


def chunked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, divisor: torch.Tensor,
                          class_weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX,
                          chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """(B, K, h, w) logits (K ≥ 2), (B, H, W) int64 labels -> the scalar fp32 cross-entropy of the
    logits upsampled to (H, W) (bilinear, align_corners=False), class-weighted by the (K,)
    ``class_weight`` if given, summed over labelled pixels and divided by ``divisor`` (clamped ≥ 1)."""
    weight = None if class_weight is None else class_weight.to(logits.device, torch.float32)
    with torch.autocast(logits.device.type, enabled=False):  # fp32 throughout, as cross_entropy under autocast
        return ChunkedUpsampleCE.apply(logits, labels, divisor.float(), weight, ignore_index, chunk_rows)
