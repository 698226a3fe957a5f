"""Dice and Lovász-softmax, forward and backward, at every pixel against ``points`` drawn per image,
beside the class-weighted cross-entropy of the CamVid recipe: CamVid-sized logits (11 classes,
90×120 upsampled to 360×480, batch 4), medians of interleaved repeats in one process.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/region_loss_points.py [--threads 2] [--points 16384]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved_medians
from transeg.engine.loss_spec import build_loss

CLASSES, LOW, HIGH, BATCH = 11, (90, 120), (360, 480), 4


def loss_specs(points: int) -> dict[str, list[dict]]:
    """The contenders: name -> ``loss:`` list."""
    return {
        "cross_entropy (class-weighted)": [{"type": "cross_entropy", "class_weight": [1.0] * CLASSES}],
        "dice": [{"type": "dice"}],
        f"dice, points {points}": [{"type": "dice", "points": points}],
        "lovasz": [{"type": "lovasz"}],
        f"lovasz, points {points}": [{"type": "lovasz", "points": points}],
    }


def forward_backward(loss: Callable, logits: torch.Tensor, labels: torch.Tensor) -> None:
    loss(logits, labels).backward()
    logits.grad = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--points", type=int, default=16384, help="pixels drawn per image")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(BATCH, CLASSES, *LOW, generator=gen, requires_grad=True)
    labels = torch.randint(0, CLASSES, (BATCH, *HIGH), generator=gen)
    fns = {name: partial(forward_backward, build_loss(spec), logits, labels)
           for name, spec in loss_specs(args.points).items()}
    ms = {name: s * 1e3 for name, s in interleaved_medians(fns, args.repeats).items()}
    print(f"| loss ({args.threads} threads, batch {BATCH}, {HIGH[0]}×{HIGH[1]}, {CLASSES} classes) | ms |")
    print("| --- | ---: |")
    for name, value in ms.items():
        print(f"| {name} | {value:.0f} |")


if __name__ == "__main__":
    main()
