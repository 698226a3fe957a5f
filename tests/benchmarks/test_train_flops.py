"""``benchmarks/train_flops.py`` counts the CPU flash-attention kernels, which ``FlopCounterMode``
alone skips, and a depthwise conv's backward, which it overcounts: forward and backward against
the operation count by hand."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.train_flops import count_flops
from transeg.models.layers.transformer import TransformerBlock


def _block_flops(b: int, n: int, c: int, heads: int, hidden: int) -> int:
    """Forward + backward FLOPs of a pre-norm block's matmuls, by hand: each Linear 3× its forward
    (output, input gradient, weight gradient), attention 2 products forward and 5 backward
    (the flash kernel recomputes the scores)."""
    linear = 2 * b * n * c * (3 * c + c + 2 * hidden)
    attention = 2 * b * heads * n * n * (c // heads)
    return 3 * linear + (2 + 5) * attention


def test_counts_flash_attention_forward_and_backward() -> None:
    torch.manual_seed(0)
    b, n, c, heads, hidden = 2, 37, 64, 2, 256
    block = TransformerBlock(c, heads, hidden // c, 0.0, 1e-6)
    x = torch.randn(b, n, c)

    def step() -> None:
        block(x).sum().backward()

    assert count_flops(step) == _block_flops(b, n, c, heads, hidden)
    plain = FlopCounterMode(display=False)
    with plain:
        step()
    assert plain.get_total_flops() == 3 * 2 * b * n * c * (4 * c + 2 * hidden)  # the attention is missed


def test_counts_a_depthwise_convolution_backward_per_group() -> None:
    b, c, h, w = 2, 32, 9, 11
    conv = torch.nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
    x = torch.randn(b, c, h, w, requires_grad=True)

    def step() -> None:
        conv(x).sum().backward()

    forward = 2 * b * c * h * w * 9  # one 3x3 filter per channel
    assert count_flops(step) == 3 * forward  # output, input gradient, weight gradient
    plain = FlopCounterMode(display=False)
    with plain:
        step()
    assert plain.get_total_flops() == 2 * forward + c * forward  # the weight gradient counted C times
