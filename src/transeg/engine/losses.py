"""The segmentation loss: logits upsampled to the label size, cross-entropy ignoring 255.

Two averagings (``train.loss_average``): ``"labelled"`` (the default) divides the summed pixel losses
by the number of labelled pixels; ``"all"`` divides by every pixel, ignored ones included, as
MMSegmentation's ``CrossEntropyLoss`` does by default (``avg_non_ignore=False``, 0.x and 1.x), with
which the papers trained: the loss, and so the effective learning rate, shrinks with the share of
ignored pixels. Under DDP the trainer passes each process the global divisor over the world size
(:func:`global_loss_divisor`), so that the averaged gradients are those of the global batch's
average, whichever the averaging.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from transeg.data.labels import IGNORE_INDEX
from transeg.engine.distributed import DistInfo
from transeg.engine.fused_ce import chunked_cross_entropy

LossAverage = Literal["labelled", "all"]


def loss_divisor(labels: torch.Tensor, average: LossAverage = "labelled",
                 ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, H, W) labels -> the fp32 scalar the summed pixel losses are divided by: the labelled
    pixels (``"labelled"``) or all of them (``"all"``)."""
    if average == "labelled":
        return (labels != ignore_index).sum().float()
    return torch.tensor(float(labels.numel()), device=labels.device)


def global_loss_divisor(labels: torch.Tensor, average: LossAverage, info: DistInfo) -> torch.Tensor:
    """This process's divisor for its (B, H, W) labels: its own :func:`loss_divisor`, or under DDP
    the sum over all processes / world size (DDP averages the gradients over the processes)."""
    count = loss_divisor(labels, average)
    if not info.distributed:
        return count
    torch.distributed.all_reduce(count)
    return count / info.world_size


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                      count: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K, h, w) logits, (B, H, W) int64 labels -> scalar fp32 loss, averaged over labelled pixels.

    ``count`` replaces the number of labelled pixels as the divisor (see :func:`loss_divisor`).
    One channel (binary segmentation) uses sigmoid cross-entropy. A batch with no labelled pixel
    gives 0 (with a gradient path), not NaN.
    """
    valid = labels != ignore_index
    count = (valid.sum() if count is None else count).clamp(min=1)
    if logits.shape[1] == 1:
        logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        target = (labels == 1).float()
        losses = F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
        return (losses * valid).sum() / count
    # row chunks: the full-resolution logits and log-probabilities are never held (fused_ce)
    return chunked_cross_entropy(logits, labels, count)
