"""An exponential moving average of a model's weights over the training steps (``train.ema_decay``).

After every applied step ``average = d * average + (1 - d) * weights`` for each floating-point parameter and
buffer, with ``d = min(decay, (1 + n) / (10 + n))`` at the n-th update, so that the first updates do not
keep the random initialisation for thousands of steps. Integer buffers (BatchNorm's step count) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def warmed_decay(decay: float, updates: int) -> float:
    """The decay used at update number ``updates`` (0-based): ``decay``, held lower while few updates exist."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """A frozen copy of ``model`` in eval mode whose weights follow the average of the model's.

    ``model`` is the averaged network (same class and config as the trained one): evaluate or save it.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (same architecture as the copy)."""
        d = warmed_decay(self.decay, self.updates)
        averaged, current = [], []
        for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(theirs.detach())
            else:
                mine.copy_(theirs)
        torch._foreach_lerp_(averaged, current, 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """The averaged weights under their model keys, and the update count under ``updates``."""
        return {"updates": self.updates, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (its weights must fit the model strictly)."""
        self.model.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
