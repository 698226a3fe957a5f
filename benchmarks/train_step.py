"""Seconds per training step of each model through transeg's trainer (its loss with every auxiliary
term, AdamW, the recipe's parameter groups), on synthetic scenes of CamVid's frame size. Models are
timed interleaved in one process, step by step, and the median after one warm-up step is reported, so that
machine load touches each model alike. The steps run in a retained heap, as in ``Trainer.fit``
(``engine/heap.py``). Run the same command on two commits to compare them.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_step.py --models segmenter-t16-mask segdeformer-mit-b0-eff

``--precisions fp32 bf16 bf16-flash`` times each model under each ``train.precision`` in the same
rounds; ``bf16-flash`` is bf16 with attention on PyTorch's CPU flash kernel (``flash_step``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Collection
from functools import partial
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved_medians
from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.heap import retained_heap
from transeg.engine.recipe import parse_config
from transeg.engine.train import Trainer
from transeg.models.layers import attention as attention_module


def trainer_for(model: str, root: Path, out: Path, size: tuple[int, int], batch: int, steps: int,
                precision: str = "fp32") -> Trainer:
    """A trainer of ``model`` on the synthetic folder ``root``, ``steps`` iterations of ``batch`` crops
    under ``train.precision`` ``precision``."""
    return Trainer(parse_config({
        "model": {"name": model},
        "data": {"dataset": "folder", "root": str(root), "crop_size": list(size), "scale": [size[1], size[0]],
                 "ratio_range": [1.0, 1.0], "test_scale": None, "num_workers": 0, "val_split": None},
        "optimizer": {"type": "adamw", "lr": 6e-4, "weight_decay": 0.01},
        "schedule": {"iterations": steps, "warmup_iters": 1},
        "train": {"batch_size": batch, "precision": precision, "eval_interval": 10**9,
                  "checkpoint_interval": 10**9, "log_interval": 10**9},
        "output_dir": str(out),
    }))


def flash_step(step: Callable[[], object]) -> object:
    """``step()`` with attention on PyTorch's SDPA kernel even under CPU bf16 autocast, as before
    ``models/layers/attention.py`` took explicit bf16 products there."""
    with mock.patch.object(attention_module, "cpu_bf16_autocast", return_value=False):
        return step()


def step_seconds(trainers: dict[str, Trainer], steps: int, flash: Collection[str] = ()) -> dict[str, float]:
    """The median seconds of each trainer's step (``Trainer._step``: its loader's next batch, loss,
    backward, AdamW) over ``steps`` rounds that step every trainer in turn, after one warm-up round;
    the trainers named in ``flash`` step through ``flash_step``."""
    steps_of = {}
    for name, trainer in trainers.items():
        step = partial(trainer._step, trainer._training_network(), iter(trainer._loader()))
        steps_of[name] = partial(flash_step, step) if name in flash else step
    with retained_heap():
        return interleaved_medians(steps_of, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["segformer-b0", "segmenter-t16-mask", "segdeformer-mit-b0-eff"])
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16", "bf16-flash", "fp16"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_dataset(Path(tmp) / "data", 2 * args.batch, 1, size)
        trainers = {f"{m} {p}": trainer_for(m, root, Path(tmp) / f"{m}-{p}", size, args.batch, args.steps + 1,
                                            p.removesuffix("-flash"))
                    for m in args.models for p in args.precisions}
        seconds = step_seconds(trainers, args.steps, [name for name in trainers if name.endswith("-flash")])
    print(f"training step, batch {args.batch}, {size[0]}x{size[1]}, {args.threads} threads, "
          f"median of {args.steps} interleaved steps after one warm-up\n")
    print("| model precision | s/step | images/s |\n| --- | --- | --- |")
    for name, median in seconds.items():
        print(f"| {name} | {median:.3f} | {args.batch / median:.2f} |")


if __name__ == "__main__":
    main()
