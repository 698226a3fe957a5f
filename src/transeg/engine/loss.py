"""The segmentation loss: logits upsampled to the label size, cross-entropy ignoring 255."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from transeg.models.segmentor import SegOutput

IGNORE_INDEX = 255


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                      count: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K, h, w) logits, (B, H, W) int64 labels -> scalar fp32 loss, averaged over labelled pixels.

    ``count`` replaces the number of labelled pixels as the divisor (see :func:`labelled_pixels`).
    One channel (binary segmentation) uses sigmoid cross-entropy. A batch with no labelled pixel
    gives 0 (with a gradient path), not NaN.
    """
    logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    valid = labels != ignore_index
    count = (valid.sum() if count is None else count).clamp(min=1)
    if logits.shape[1] == 1:
        target = (labels == 1).float()
        losses = F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
        return (losses * valid).sum() / count
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum") / count


def total_loss(out: SegOutput, labels: torch.Tensor, aux_weights: dict[str, float],
               count: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Main loss plus weighted auxiliary losses; also each part, for the log. ``aux_weights``
    overrides the model's own weights (``out.aux_weights``)."""
    loss = segmentation_loss(out.logits, labels, count=count)
    parts = {"loss_seg": loss.detach()}
    for name, aux_logits in out.aux.items():
        aux = segmentation_loss(aux_logits, labels, count=count)
        parts[f"loss_{name}"] = aux.detach()
        loss = loss + aux_weights.get(name, out.aux_weights.get(name, 0.0)) * aux
    return loss, parts
