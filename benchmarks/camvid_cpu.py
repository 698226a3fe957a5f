"""CamVid on the CPU: segformer-b0 from random initialisation, fixed wall-clock training budget.

Trains on the 367 train frames at full 360x480 resolution with transeg's data pipeline and
trainer, evaluates on the 101 val frames (whole image) and prints mIoU, per-class IoU and training
throughput. ``--impl transformers`` drives transformers' ``SegformerForSemanticSegmentation``
through the very same pipeline, loss, optimizer groups and schedule, so ``--impl both`` compares
the two implementations at equal budget (run concurrently with ``--threads`` each, so that both
see the same machine).

    python benchmarks/camvid_cpu.py --minutes 60 --impl both --out runs/camvid_cpu
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import torch
from torch import nn

from transeg.config import parse_config
from transeg.data.datasets import build_dataset
from transeg.engine.evaluate import evaluate
from transeg.engine.train import Trainer, build_training_model
from transeg.models.segmentor import SegOutput

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


class TransformersSegformer(nn.Module):
    """transformers' SegFormer behind the interface the trainer uses (``encoder``/``decoder`` names
    give it the same parameter groups: decoder lr x10, no decay on LayerNorms)."""

    def __init__(self, like) -> None:
        super().__init__()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        enc, dec = like.config.encoder_config, like.config.decoder_config
        hf = SegformerForSemanticSegmentation(SegformerConfig(
            hidden_sizes=list(enc.widths), depths=list(enc.depths), decoder_hidden_size=dec.embed_dim,
            num_labels=like.num_classes, drop_path_rate=enc.drop_path_rate, classifier_dropout_prob=dec.dropout))
        self.encoder, self.decoder, self.config = hf.segformer, hf.decode_head, like.config

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x, output_hidden_states=True).hidden_states)

    def forward_train(self, x: torch.Tensor) -> SegOutput:
        return SegOutput(self.forward(x))


def camvid_config(out_dir: Path, batch: int, lr: float, iterations: int, minutes: float, workers: int):
    return parse_config({
        "model": {"name": "segformer-b0"},
        "data": {"dataset": "camvid", "root": str(CAMVID), "crop_size": [360, 480], "scale": [480, 360],
                 "ratio_range": [0.5, 2.0], "test_scale": None, "num_workers": workers},
        "optimizer": {"type": "adamw", "lr": lr, "weight_decay": 0.01},
        "schedule": {"iterations": iterations, "warmup_iters": min(100, iterations // 10)},
        "train": {"batch_size": batch, "seed": 0, "log_interval": 10, "eval_interval": 10**9,
                  "checkpoint_interval": 10**9, "keep_checkpoints": 1, "time_limit_minutes": minutes},
        "output_dir": str(out_dir),
    }, source="camvid_cpu")


def trainer_for(impl: str, cfg) -> Trainer:
    model = build_training_model(cfg.model, build_dataset("camvid", CAMVID, "train"))
    return Trainer(cfg, model=TransformersSegformer(model) if impl == "transformers" else model)


def seconds_per_iteration(impl: str, args) -> float:
    """Median time of a few training iterations (after one warm-up), to size the schedule."""
    cfg = camvid_config(args.out / f"{impl}-calibration", args.batch, args.lr, 6, 10, args.workers)
    trainer = trainer_for(impl, cfg)
    times = []
    original = trainer._step

    def timed(*a):
        start = time.perf_counter()
        result = original(*a)
        times.append(time.perf_counter() - start)
        return result

    trainer._step = timed
    trainer.fit(show_progress=False)
    return sorted(times[1:])[len(times[1:]) // 2]


def run(impl: str, args) -> None:
    torch.set_num_threads(args.threads)
    per_iteration = seconds_per_iteration(impl, args)
    iterations = max(10, int(args.minutes * 60 / per_iteration))
    cfg = camvid_config(args.out / impl, args.batch, args.lr, iterations, args.minutes, args.workers)
    trainer = trainer_for(impl, cfg)
    started = time.monotonic()
    result = trainer.fit(show_progress=False)
    train_seconds = time.monotonic() - started
    metrics, _ = evaluate(trainer.model, build_dataset("camvid", CAMVID, "val"), cfg.eval, show_progress=False)
    report = {"impl": impl, "iterations": result.iteration, "planned_iterations": iterations,
              "train_minutes": round(train_seconds / 60, 1),
              "train_images_per_s": round(result.iteration * args.batch / train_seconds, 2),
              "mIoU": metrics.mIoU, "aAcc": metrics.aAcc,
              "per_class_iou": dict(zip(metrics.class_names, metrics.iou, strict=True))}
    (args.out / f"{impl}.json").write_text(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="training budget per implementation")
    parser.add_argument("--impl", choices=["transeg", "transformers", "both"], default="both")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=6e-4, help="encoder lr (decoder x10); random init")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes per run")
    parser.add_argument("--out", type=Path, default=Path("runs/camvid_cpu"))
    args = parser.parse_args()
    if not CAMVID.is_dir():
        raise SystemExit(f"CamVid not found at {CAMVID}; see ../shared/data/README.md")
    impls = ["transeg", "transformers"] if args.impl == "both" else [args.impl]
    args.out.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=run, args=(impl, args)) for impl in impls]  # concurrently
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    reports = [json.loads((args.out / f"{impl}.json").read_text()) for impl in impls]
    names = list(reports[0]["per_class_iou"])
    print(f"CamVid val, segformer-b0 from scratch, {args.minutes:g} min budget, batch {args.batch}, "
          f"{args.threads} thread(s) each\n")
    print("| | " + " | ".join(r["impl"] for r in reports) + " |")
    print("| --- |" + " --- |" * len(reports))
    for key in ("mIoU", "aAcc"):
        print(f"| {key} | " + " | ".join(f"{r[key] * 100:.2f}" for r in reports) + " |")
    for key in ("iterations", "train_images_per_s"):
        print(f"| {key} | " + " | ".join(str(r[key]) for r in reports) + " |")
    for name in names:
        print(f"| IoU {name} | " + " | ".join(_pct(r["per_class_iou"][name]) for r in reports) + " |")


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{value * 100:.1f}"


if __name__ == "__main__":
    main()
