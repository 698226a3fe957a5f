"""One multi-head attention, forward and backward, under each path: PyTorch's SDPA in fp32, SDPA
under CPU bf16 autocast, and transeg's ``attention`` under bf16 autocast (explicit bf16 products).
Medians of interleaved rounds, ratios to SDPA fp32, and each bf16 path's mean error against fp32.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/attention_bf16.py --shape 2 3 691 64
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved_medians
from transeg.models.layers.attention import attention

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def forward_backward(fn: Attention, qkv: list[torch.Tensor], bf16: bool) -> Callable[[], torch.Tensor]:
    """A closure running ``fn`` (under CPU bf16 autocast when ``bf16``) and its backward; returns the output."""
    def run() -> torch.Tensor:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = fn(*qkv)
        out.float().sum().backward()
        return out.detach().float()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 3, 691, 64], metavar=("B", "H", "N", "D"))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    qkv = [torch.randn(*args.shape) for _ in range(3)]
    fp32 = [t.clone().requires_grad_() for t in qkv]
    bf16 = [t.bfloat16().requires_grad_() for t in qkv]  # as a Linear gives them under autocast
    paths = {"SDPA fp32": forward_backward(F.scaled_dot_product_attention, fp32, False),
             "SDPA bf16 autocast": forward_backward(F.scaled_dot_product_attention, bf16, True),
             "transeg attention, bf16 autocast": forward_backward(attention, bf16, True)}
    reference = paths["SDPA fp32"]()
    errors = {name: (run() - reference).abs().mean().item() for name, run in paths.items()}
    seconds = interleaved_medians(paths, args.rounds)
    base = seconds["SDPA fp32"]
    print(f"attention {tuple(args.shape)} forward + backward, {args.threads} threads, "
          f"median of {args.rounds} interleaved rounds\n")
    print("| path | ms | × SDPA fp32 | mean abs error vs fp32 |\n| --- | --- | --- | --- |")
    for name, s in seconds.items():
        print(f"| {name} | {1e3 * s:.1f} | {base / s:.2f} | {errors[name]:.1e} |")


if __name__ == "__main__":
    main()
