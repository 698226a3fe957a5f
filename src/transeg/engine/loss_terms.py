"""Per-pixel loss terms: cross-entropy (optionally class-weighted), focal and OHEM cross-entropy, and
the sigmoid forms of cross-entropy and focal for one-channel (binary) models.

Every term takes (B, K, h, w) logits, upsampled here to the (B, H, W) int64 labels, and returns the
sum of its pixel losses over labelled pixels (label != ignore) divided by ``divisor`` — the
trainer's global-batch divisor (:func:`transeg.engine.losses.global_loss_divisor`), so that the
gradients DDP averages over processes are those of one process holding the whole batch.

OHEM follows MMSegmentation's ``OHEMPixelSampler`` with a threshold: a labelled pixel is kept when
the softmax probability of its true class is below ``max(thresh, q)``, ``q`` being the
``min_kept * batch``-th smallest such probability (0-based, capped at the last), so that at least
``min_kept`` pixels per image are kept. Without a threshold (``thresh: null``) the ``min_kept * batch``
pixels of largest cross-entropy are kept, as the sampler ranks them by loss. Under DDP ``q`` is taken
over the global batch (each process contributes its smallest ``k + 1`` probabilities), so 2
processes select what 1 would.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from transeg.data.labels import IGNORE_INDEX
from transeg.engine.distributed import DistInfo
from transeg.engine.fused_ce import chunked_cross_entropy
from transeg.engine.losses import segmentation_loss
from transeg.errors import TransegError


def upsample(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) logits -> fp32 (B, K, H, W) at the (B, H, W) labels' size (bilinear)."""
    logits = logits.float()
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def require_classes(logits: torch.Tensor, term: str) -> None:
    """Refuse a softmax-only term on a one-channel (sigmoid) model."""
    if logits.shape[1] < 2:
        raise TransegError(f"loss {term}: needs a softmax model of 2 or more classes; "
                           "a one-class model takes cross_entropy, focal or dice")


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, divisor: torch.Tensor,
                  class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_i w[y_i] · -log softmax(z_i)[y_i] / divisor over labelled pixels (w = 1 without ``class_weight``,
    a (K,) tensor). One channel: binary cross-entropy of sigmoid(z) against ``label == 1``."""
    if class_weight is None or logits.shape[1] == 1:
        return segmentation_loss(logits, labels, count=divisor)
    return chunked_cross_entropy(logits, labels, divisor, class_weight)


def focal(logits: torch.Tensor, labels: torch.Tensor, divisor: torch.Tensor, gamma: float,
          alpha: float | None = None) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) Σ_i -α_t (1 - p_t)^γ log p_t / divisor over labelled pixels, p_t the
    probability of the true class: softmax over K channels, or sigmoid of one channel with the
    foreground ``label == 1``, where α_t = α for foreground and 1 - α for background (no α: 1)."""
    z = upsample(logits, labels)
    valid = labels != IGNORE_INDEX
    if z.shape[1] == 1:
        target = (labels == 1).float()
        log_p_t = -F.binary_cross_entropy_with_logits(z[:, 0], target, reduction="none")
        alpha_t = 1.0 if alpha is None else alpha * target + (1 - alpha) * (1 - target)
    else:
        if alpha is not None:
            raise TransegError("loss focal: alpha weighs the foreground of one-class (sigmoid) models; "
                               "with several classes use gamma alone")
        log_p_t = F.log_softmax(z, dim=1).gather(1, labels.clamp(max=z.shape[1] - 1)[:, None])[:, 0]
        alpha_t = 1.0
    p_t = log_p_t.exp()
    losses = -alpha_t * (1 - p_t).pow(gamma) * log_p_t
    return (losses * valid).sum() / divisor.clamp(min=1)


def _order_statistic(values: torch.Tensor, index: int, info: DistInfo | None) -> float | None:
    """The ``index``-th smallest (0-based, capped at the last) of the 1-D ``values`` of every process;
    None when there are none. Under DDP each process contributes its ``index + 1`` smallest."""
    ranked = values.sort().values
    count = torch.tensor(ranked.numel(), device=values.device)
    if info is not None and info.distributed:
        smallest = torch.full((index + 1,), float("inf"), device=values.device)
        smallest[: min(index + 1, ranked.numel())] = ranked[: index + 1]
        gathered = [torch.empty_like(smallest) for _ in range(info.world_size)]
        dist.all_gather(gathered, smallest)
        dist.all_reduce(count)
        ranked = torch.cat(gathered).sort().values
    n = int(count)
    return float(ranked[min(index, n - 1)]) if n > 0 else None


def ohem_keep(z: torch.Tensor, labels: torch.Tensor, thresh: float | None, min_kept: int,
              info: DistInfo | None = None) -> torch.Tensor:
    """(B, K, H, W) upsampled logits -> the (B, H, W) bool mask of the pixels OHEM keeps (see the module
    docstring); the global batch's order statistic under DDP. No ``thresh``: the ``min_kept * batch``
    pixels of largest cross-entropy, i.e. of smallest true-class probability (ties at the cut kept)."""
    with torch.no_grad():
        valid = labels != IGNORE_INDEX
        prob = F.softmax(z, dim=1).gather(1, labels.clamp(max=z.shape[1] - 1)[:, None])[:, 0]
        batch = labels.shape[0] * (info.world_size if info is not None and info.distributed else 1)
        k = min_kept * batch
        if thresh is None:
            cut = _order_statistic(prob[valid], max(k - 1, 0), info)
            return valid & (prob <= cut) if cut is not None and k > 0 else torch.zeros_like(valid)
        quantile = _order_statistic(prob[valid], k, info)
        return valid & (prob < max(quantile if quantile is not None else 0.0, thresh))


def ohem_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, divisor: torch.Tensor, thresh: float | None,
                       min_kept: int, info: DistInfo | None = None) -> torch.Tensor:
    """Σ over the pixels :func:`ohem_keep` keeps of -log p_t, / divisor (MMSegmentation normalises the
    sampled loss by the same divisor as plain cross-entropy)."""
    require_classes(logits, "ohem_cross_entropy")
    z = upsample(logits, labels)
    keep = ohem_keep(z, labels, thresh, min_kept, info)
    losses = F.cross_entropy(z, labels, ignore_index=IGNORE_INDEX, reduction="none")
    return (losses * keep).sum() / divisor.clamp(min=1)
