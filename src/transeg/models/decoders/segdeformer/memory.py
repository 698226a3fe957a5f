"""MCIBI's class-centre memory (Jin et al., "Mining Contextual Information Beyond Image", ICCV 2021):
the momentum-updated external tokens of SegDeformer's Table 5 ("the momentum update schedule is the
same as [17]").

One C-vector per class, updated after each training forward from the ground truth:

1. The features (B, C, h, w) are upsampled bilinearly to the label size (B, H, W); pixels labelled
   255 are left out.
2. A class seen for the first time (its row still all zeros) is set to the mean feature of its pixels.
3. Otherwise its batch centre is the mean of its pixels' features weighted by
   ``1 - cos(feature, memory row)`` (normalised over the batch: pixels unlike the memory count more),
   and ``row <- (1 - m) row + m centre``.
4. m = base_momentum * (1 - t / T) ** power, t the number of updates so far (one per training
   forward, so per micro-batch under gradient accumulation), T ``iters``: MCIBI sets
   m = base_momentum * lr / base_lr under its poly(0.9) learning rate, which is this with power 0.9
   (the SegDeformer paper's 160k iterations: ``SegDeformerConfig.token_momentum_iters``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transeg.data.labels import IGNORE_INDEX
from transeg.models.layers.resize import resize


class ClassCentreMemory(nn.Module):
    """Buffers ``tokens`` (N_cls, C), zeros until a class is first seen, and ``steps`` (the update count)."""

    def __init__(self, num_classes: int, dim: int, base_momentum: float, iters: int, power: float) -> None:
        super().__init__()
        self.base_momentum, self.iters, self.power = base_momentum, iters, power
        self.register_buffer("tokens", torch.zeros(num_classes, dim))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def momentum(self) -> float:
        """The weight of the batch centre at the current step."""
        progress = min(int(self.steps), self.iters) / self.iters
        return self.base_momentum * (1 - progress) ** self.power

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """features (B, C, h, w), labels (B, H, W) int64 class indices or 255: one step of the memory."""
        k, c = self.tokens.shape
        memory = self.tokens.float()
        count, total = features.new_zeros(k, dtype=torch.float32), features.new_zeros(k, c, dtype=torch.float32)
        weight, weighted = torch.zeros_like(count), torch.zeros_like(total)
        for feats, label in zip(features, labels, strict=True):  # one image at a time: (C, H, W) upsampled
            f = resize(feats[None].float(), label.shape[-2:])[0].flatten(1).T  # (H W, C)
            y = label.flatten()
            f, y = f[y != IGNORE_INDEX], y[y != IGNORE_INDEX]
            count.index_add_(0, y, torch.ones_like(y, dtype=torch.float32))
            total.index_add_(0, y, f)
            w = 1 - F.cosine_similarity(f, memory[y], dim=1)  # (P,)
            weight.index_add_(0, y, w)
            weighted.index_add_(0, y, w[:, None] * f)
        seen = count > 0
        mean = total / count.clamp(min=1)[:, None]
        # all pixels parallel to the row (weights all 0): the weighted mean is undefined, the mean is not
        centre = torch.where(weight[:, None] > 0, weighted / weight.clamp(min=1e-12)[:, None], mean)
        first = seen & (memory == 0).all(dim=1)
        m = self.momentum()
        updated = torch.where(first[:, None], mean, (1 - m) * memory + m * centre)
        self.tokens.copy_(torch.where(seen[:, None], updated, memory).to(self.tokens.dtype))
        self.steps += 1
