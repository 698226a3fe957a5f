"""Is the data pipeline the bottleneck? The training loader alone (decode + augment + collate) against
the training step alone, and the two together, on CamVid with the CamVid CPU recipe.

* loader: images/s of ``next(batches)`` for each worker count, nothing else running;
* step: images/s of forward + loss + backward + AdamW on one pre-loaded batch of the recipe's size;
* both: the training loop's images/s, the loader's workers feeding the step (what training sees).

    python benchmarks/loader_throughput.py [--config configs/segformer/segformer-b0-camvid-cpu.yaml]
        [--batches 6] [--workers 0 1 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.progress import track

import transeg
from transeg.engine.optim import build_optimizer
from transeg.engine.recipe import build_dataset_from_config, load_config
from transeg.engine.train import build_training_loss, train_loader, training_autocast

ROOT = Path(__file__).resolve().parents[1]


def loader_rate(loader, batches: int, step=None) -> float:
    """Images/s over ``batches`` batches after the first (worker start-up), each passed to ``step``."""
    it = iter(loader)
    first = next(it)
    if step is not None:
        step(first)
    images, start = 0, time.perf_counter()
    for _ in track(range(batches), description="batches", transient=True):
        batch = next(it)
        if step is not None:
            step(batch)
        images += batch["image"].shape[0]
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs/segformer/segformer-b0-camvid-cpu.yaml"))
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if not Path(cfg.data.root).exists():
        raise SystemExit(f"{args.config}: data.root {cfg.data.root} not found")
    train_set = build_dataset_from_config(cfg.data, cfg.data.train_split)
    model = transeg.create_model(cfg.model.name, num_classes=train_set.num_classes).train()
    optimizer = build_optimizer(model, cfg.optimizer)  # the trainer's, as its loss below
    loss = build_training_loss(cfg, train_set, write=False)

    def step(batch: dict) -> None:  # the recipe's precision (autocast), its loss as configured
        optimizer.zero_grad(set_to_none=True)
        with training_autocast("cpu", cfg.train.precision):
            out = model.forward_train(batch["image"])
        loss(out, batch["label"]).backward()
        optimizer.step()

    def loader(workers: int):
        return train_loader(train_set, cfg.model_copy(update={"data": cfg.data.model_copy(
            update={"num_workers": workers})}), model.config.mean, model.config.std)

    batch = next(iter(loader(0)))
    step(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(args.batches // 2):
        step(batch)
    step_rate = (args.batches // 2) * batch["image"].shape[0] / (time.perf_counter() - start)
    print(f"{cfg.model.name}, batch {cfg.train.batch_size}, crop {cfg.data.crop_size}, {cfg.train.precision}, "
          f"{args.threads} threads, {args.batches} batches\n")
    print(f"training step alone (pre-loaded batch): {step_rate:.2f} images/s\n")
    print("| workers | loader alone, images/s | loader / step | training loop, images/s |")
    print("| --- | --- | --- | --- |")
    for workers in args.workers:
        alone = loader_rate(loader(workers), args.batches)
        together = loader_rate(loader(workers), args.batches // 2, step)
        print(f"| {workers} | {alone:.1f} | {alone / step_rate:.1f}× | {together:.2f} |", flush=True)


if __name__ == "__main__":
    main()
