"""Seconds per training step under each ``train.precision`` (fp32, bf16, fp16 with its gradient scaler),
on synthetic scenes: what autocast costs or saves on this machine (the run's wall time, its first
step and final save included, over the steps).

    python benchmarks/train_precision.py --model segformer-b0 --size 128 --batch 2 --steps 6
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.recipe import parse_config
from transeg.engine.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="segformer-b0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_dataset(Path(tmp) / "data", 2 * args.batch, 1, (args.size, args.size))
        for precision in ("fp32", "bf16", "fp16"):
            cfg = parse_config({
                "model": {"name": args.model},
                "data": {"dataset": "folder", "root": str(root), "crop_size": [args.size] * 2,
                         "scale": [args.size] * 2, "test_scale": None, "num_workers": 0, "val_split": None},
                "schedule": {"iterations": args.steps, "warmup_iters": 1},
                "train": {"batch_size": args.batch, "precision": precision, "eval_interval": 10_000,
                          "checkpoint_interval": 10_000},
                "output_dir": str(Path(tmp) / precision),
            })
            trainer = Trainer(cfg)
            start = time.perf_counter()
            trainer.fit(show_progress=False)
            per_step = (time.perf_counter() - start) / args.steps
            print(f"{precision}: {per_step:.3f} s/step ({args.model}, {args.size}x{args.size}, batch {args.batch}, "
                  f"{torch.get_num_threads()} threads, {trainer.info.device})")


if __name__ == "__main__":
    main()
