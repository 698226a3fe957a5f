"""``benchmarks/region_loss_points.py``: every contender is a valid ``loss:`` list whose forward and
backward run, and the drawn-pixel contenders draw what they say."""

from __future__ import annotations

import torch

from benchmarks.region_loss_points import CLASSES, forward_backward, loss_specs
from transeg.engine.loss_spec import build_loss, parse_loss_spec


def test_contenders_are_valid_losses_that_step() -> None:
    specs = loss_specs(points=64)
    assert [t.points for name, spec in specs.items() if "points" in name for t in parse_loss_spec(spec)] == [64, 64]
    logits = torch.randn(2, CLASSES, 6, 8, requires_grad=True)
    labels = torch.randint(0, CLASSES, (2, 24, 32))
    for spec in specs.values():
        loss = build_loss(spec)
        assert torch.isfinite(loss(logits, labels)) and loss(logits, labels) > 0
        forward_backward(loss, logits, labels)
        assert logits.grad is None  # cleared for the next contender
