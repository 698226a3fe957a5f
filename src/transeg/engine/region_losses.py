"""Region losses over the whole (global) batch: Dice and Lovász-softmax.

Neither is a sum of pixel losses, so the global-batch divisor does not apply. Under DDP each process
computes the loss of the *global* batch from its own pixels plus the other processes' (detached)
statistics, and scales its gradient by the world size W: DDP's mean of the W gradients is then the
gradient of the global-batch loss, and the logged mean of the W values is its value.

* Dice (Milletari et al. 2016, plain sums): per class c, over labelled pixels,
  ``D_c = (2 Σ p_c t_c + s) / (Σ p_c + Σ t_c + s)``; loss ``1 - mean_c D_c`` over all K classes
  (softmax p, one-hot t). One channel: p = sigmoid, t = ``label == 1``, loss ``1 - D``. The three
  (K,) sums are all-reduced.
* Lovász-softmax (Berman et al. 2018, batch form, classes present in the labels): per class the
  errors ``e_i = |t_ic - p_ic|`` sorted in decreasing order, dotted with the discrete gradient of the
  Jaccard loss along that order; the mean over present classes. The loss is piecewise linear in e, so
  under DDP every process gathers all processes' (detached) errors and foreground flags, ranks them
  globally, and sums ``e_i g_i`` over its own pixels (cost: K floats per labelled pixel per process).

Both take ``points``: evaluate the loss at that many labelled pixels per image, drawn uniformly
without replacement, instead of at every one. The logits are interpolated at those pixels only
(``grid_sample``, equal to the full-resolution bilinear upsample there), so the cost of the term
falls with the sample; Lovász's sorts dominate its cost at full resolution (a batch of four 360×480
CamVid crops, forward and backward: 894 ms at every pixel, 100 ms at 16384 points per image,
``benchmarks/region_loss_points.py``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from transeg.data.labels import IGNORE_INDEX
from transeg.engine.distributed import DistInfo
from transeg.engine.loss_terms import require_classes, upsample


def sample_pixels(logits: torch.Tensor, labels: torch.Tensor, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, h, w) logits, (B, H, W) labels -> fp32 (N, K) logits and (N,) labels at up to ``points``
    labelled pixels of each image, drawn uniformly without replacement (all of an image's labelled
    pixels when it has fewer). The logits are those of the bilinear upsample to (H, W)
    (``align_corners=False``), interpolated at the drawn pixels alone."""
    height, width = labels.shape[-2:]
    valid = (labels != IGNORE_INDEX).flatten(1)  # (B, HW)
    keys = torch.rand(valid.shape, device=labels.device).masked_fill_(~valid, 2.0)
    drawn, index = keys.topk(min(points, height * width), dim=1, largest=False)  # (B, P)
    y, x = index.div(width, rounding_mode="floor"), index.remainder(width)
    # pixel centres in grid_sample's [-1, 1] frame: source coordinate (x + 0.5) w / W - 0.5, as interpolate
    grid = torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1).float()[:, None]
    z = F.grid_sample(logits.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    keep = drawn <= 1  # (B, P): drawn from labelled pixels
    return z[:, :, 0].transpose(1, 2)[keep], labels.flatten(1).gather(1, index)[keep]


def _probabilities(logits: torch.Tensor, labels: torch.Tensor,
                   points: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, h, w) logits, (B, H, W) labels -> (N, C) probabilities and (N, C) one-hot targets of the
    N labelled pixels (or of ``points`` drawn per image); C = K, or 1 (sigmoid foreground) for a
    one-channel model."""
    if points is None:
        z = upsample(logits, labels)
        valid = labels != IGNORE_INDEX
        z, labels = z.permute(0, 2, 3, 1)[valid], labels[valid]  # (N, K), (N,)
    else:
        z, labels = sample_pixels(logits, labels, points)
    if z.shape[1] == 1:
        return torch.sigmoid(z), (labels == 1).float()[:, None]
    return F.softmax(z, dim=1), F.one_hot(labels, z.shape[1]).float()


def _global_sum(local: torch.Tensor, info: DistInfo | None) -> torch.Tensor:
    """``local`` plus the other processes' (detached) values: the global sum, differentiable in ``local``."""
    if info is None or not info.distributed:
        return local
    total = local.detach().clone()
    dist.all_reduce(total)
    return local + (total - local.detach())


def _world_scaled(loss: torch.Tensor, info: DistInfo | None) -> torch.Tensor:
    """The same value, with the gradient times the world size (DDP divides the summed gradients by it)."""
    if info is None or not info.distributed:
        return loss
    return info.world_size * loss - (info.world_size - 1) * loss.detach()


def dice(logits: torch.Tensor, labels: torch.Tensor, smooth: float = 1.0, info: DistInfo | None = None,
         points: int | None = None) -> torch.Tensor:
    """``1 - mean_c D_c`` over the global batch (see the module docstring); a scalar."""
    prob, target = _probabilities(logits, labels, points)
    stats = torch.stack([(prob * target).sum(0), prob.sum(0), target.sum(0)])  # (3, C)
    inter, p_sum, t_sum = _global_sum(stats, info)
    score = (2 * inter + smooth) / (p_sum + t_sum + smooth)
    return _world_scaled(1 - score.mean(), info)


def lovasz_weights(errors: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """(N,) errors and {0, 1} foreground -> (N,) weights g with ``Σ e_i g_i`` the Lovász extension of
    the Jaccard loss at e: ranked by decreasing error, g is the increment of ``1 - |fg ∩ top-j| /
    |fg ∪ top-j|`` at each rank j."""
    order = errors.argsort(descending=True)
    fg_sorted = fg[order]
    positives = fg_sorted.sum()
    intersection = positives - fg_sorted.cumsum(0)
    union = positives + (1 - fg_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    increments = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return torch.empty_like(increments).scatter_(0, order, increments)


def _gather_rows(local: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, int]:
    """(N_r, C) rows of every process, concatenated in rank order, and where this process's rows start."""
    sizes = [torch.zeros((), dtype=torch.long, device=local.device) for _ in range(info.world_size)]
    dist.all_gather(sizes, torch.tensor(local.shape[0], device=local.device))  # nccl: tensors on the GPU
    longest = max(int(s) for s in sizes)
    padded = torch.zeros((longest, local.shape[1]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(gathered, padded)
    rows = torch.cat([g[: int(s)] for g, s in zip(gathered, sizes, strict=True)])
    return rows, sum(int(s) for s in sizes[: info.rank])


def lovasz_softmax(logits: torch.Tensor, labels: torch.Tensor, info: DistInfo | None = None,
                   points: int | None = None) -> torch.Tensor:
    """Lovász-softmax over the global batch, averaged over the classes present in its labels; a scalar
    (0 with a gradient path when no pixel is labelled)."""
    require_classes(logits, "lovasz")
    prob, target = _probabilities(logits, labels, points)
    errors = (target - prob).abs()  # (N, K)
    all_errors, all_target, start = errors.detach(), target, 0
    if info is not None and info.distributed:
        all_errors, start = _gather_rows(errors.detach(), info)
        all_target, _ = _gather_rows(target, info)
    present = all_target.sum(0) > 0
    if not bool(present.any()):
        return _world_scaled(logits.sum() * 0.0, info)
    mine = slice(start, start + errors.shape[0])
    loss = logits.new_zeros((), dtype=torch.float32)
    for c in present.nonzero()[:, 0].tolist():
        weights = lovasz_weights(all_errors[:, c], all_target[:, c])[mine]
        loss = loss + (errors[:, c] * weights).sum()
    scale = info.world_size if info is not None and info.distributed else 1
    return scale * loss / int(present.sum())
