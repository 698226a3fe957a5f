"""The cross-entropy alone, forward and backward: the chunked one (the default) against the
whole-image one transeg used before, on B0-sized logits (150 classes, 128² upsampled to 512²,
batch 2), medians of interleaved repeats in one process.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/chunked_loss.py [--threads 2] [--repeats 8]
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved_medians
from benchmarks.vs_transformers import whole_image_loss
from transeg.engine.loss_spec import build_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 150, 128, 128, generator=gen, requires_grad=True)
    labels = torch.randint(0, 150, (2, 512, 512), generator=gen)
    losses = {"whole-image": whole_image_loss, "chunked": build_loss()}
    def forward_backward(loss) -> None:
        loss(logits, labels).backward()
        logits.grad = None

    seconds = interleaved_medians({name: partial(forward_backward, loss) for name, loss in losses.items()},
                                  args.repeats)
    ms = {name: s * 1e3 for name, s in seconds.items()}
    print(f"{args.threads} threads: whole-image {ms['whole-image']:.0f} ms, chunked {ms['chunked']:.0f} ms "
          f"({ms['whole-image'] / ms['chunked']:.2f}× faster)")


if __name__ == "__main__":
    main()
