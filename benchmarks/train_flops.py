"""How close a model's training step is to this machine's matrix-multiply floor.

Counts the floating-point operations of one training forward, loss and backward (``FlopCounterMode``,
with PyTorch's own SDPA formulas mapped onto the CPU flash-attention kernels, which it does not
count by itself: forward 2 and backward 5 attention matmuls, and with grouped convolutions' backward
counted per group, which its own formula misses: MiT's depthwise convs), measures the fp32 GEMM rate of the
machine on the model's width, interleaved with the steps, and prints the floor (operations / GEMM
rate) next to the measured seconds of the same forward and backward. A step near its floor can
only get faster by doing less arithmetic or doing it in lower precision.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_flops.py --model segmenter-t16-mask
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved_medians
from transeg.api import create_model
from transeg.engine.losses import segmentation_loss


def _attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """The forward's two products, QK^T and PV, of (B, H, N, d) shapes."""
    return flop_counter.sdpa_flop_count(query, key, value)


def _attention_backward(grad, query, key, value, *args, out_shape=None, **kwargs) -> int:
    """The backward's five products: QK^T again, then the gradients of P, V, Q and K."""
    return flop_counter.sdpa_backward_flop_count(grad, query, key, value)


def _convolution_backward(grad, x, weight, bias, stride, padding, dilation, transposed, output_padding,
                          groups, output_mask, out_shape=None, **kwargs) -> int:
    """The input and the weight gradient each cost the forward's products. PyTorch's own formula
    counts the weight gradient as if ``groups`` were 1, C times too many for a depthwise conv."""
    forward = flop_counter.conv_flop_count(list(x), list(weight), list(grad), transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention,
                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward,
                 torch.ops.aten.convolution_backward: _convolution_backward}


def count_flops(fn: Callable[[], object]) -> int:
    """The floating-point operations of ``fn()``, its backward included, attention kernels counted
    and grouped convolutions' backward counted per group."""
    counter = FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)
    with counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="segmenter-t16-mask")
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=args.classes).train()
    image = torch.randn(args.batch, 3, *args.size)
    labels = torch.randint(0, args.classes, (args.batch, *args.size))

    def step() -> None:
        segmentation_loss(model(image), labels).backward()
        model.zero_grad(set_to_none=True)

    flops = count_flops(step)
    width = max(m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    a, b = torch.randn(2048, width), torch.randn(width, 4 * width)
    seconds = interleaved_medians({"step": step, "gemm": lambda: a @ b}, args.repeats)
    gemm = 2 * a.shape[0] * width * 4 * width / seconds["gemm"]
    print(f"{args.model}, batch {args.batch}, {args.size[0]}x{args.size[1]}, fp32, {args.threads} threads")
    floor = flops / gemm
    print("| GFLOP per step | GEMM GFLOP/s | floor s | measured s | floor / measured |")
    print("| --- | --- | --- | --- | --- |")
    measured = seconds["step"]
    print(f"| {flops / 1e9:.1f} | {gemm / 1e9:.0f} | {floor:.3f} | {measured:.3f} | {floor / measured:.0%} |")


if __name__ == "__main__":
    main()
