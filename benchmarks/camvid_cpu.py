"""CamVid on the CPU: models from random initialisation, equal wall-clock training budgets.

Each run trains one CamVid recipe from ``configs/`` (by default ``segformer-b0-camvid-30min.yaml``)
with transeg's data pipeline and trainer for ``--minutes``, its schedule sized from a short
calibration so that it ends with the budget, then evaluates on the 101 val frames at the recipe's
``test_scale`` and reports mIoU, per-class IoU and training images/s (``--no-transeg`` skips these).
Each model is also evaluated with test-time augmentation (``--ms-flip-scales``, relative to the
``test_scale``, each image and its mirror; ``--ms-flip-scales`` with no value skips it): the table
gives both, "single / ms-flip".
Unless ``--no-transformers``, the first (SegFormer) recipe also drives transformers'
``SegformerForSemanticSegmentation`` through the very same pipeline, loss, optimizer groups and
schedule. Runs go concurrently, ``--threads`` each, so that all see the same machine, or one after
another with ``--sequential``, each then having the whole machine.

    python benchmarks/camvid_cpu.py --minutes 30 --threads 2 --sequential
    python benchmarks/camvid_cpu.py --minutes 30 --threads 2 --no-transformers --out runs/camvid30
    python benchmarks/camvid_cpu.py --minutes 15 --no-transformers \
        --configs configs/segformer/segformer-b0-camvid-cpu.yaml configs/segmenter/segmenter-t16-mask-camvid-cpu.yaml
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads yield to the loader's worker
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import median_step_seconds
from transeg.data.datasets import SegmentationDataset, build_dataset
from transeg.engine.evaluate import evaluate
from transeg.engine.recipe import EvalSection, apply_overrides, load_config, parse_config
from transeg.engine.train import Trainer, build_training_model
from transeg.models.outputs import SegOutput

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
        self.min_input_size = like.min_input_size  # the same MiT: inference pads smaller images to it

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x, output_hidden_states=True).hidden_states)

    def forward_train(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> SegOutput:
        return SegOutput(self.forward(x))


def run_config(config: Path, out_dir: Path, iterations: int, minutes: float, workers: int):
    """The recipe with its schedule sized to ``iterations`` and a hard ``minutes`` limit."""
    cfg = load_config(config)
    data = apply_overrides(cfg.model_dump(mode="json"), [
        f"output_dir={out_dir}", f"schedule.iterations={iterations}",
        f"schedule.warmup_iters={min(cfg.schedule.warmup_iters, iterations // 10)}",
        f"data.root={CAMVID}", f"data.num_workers={workers}", "data.val_split=null",
        f"train.time_limit_minutes={minutes}", "train.checkpoint_interval=1000000000", "train.log_interval=10",
    ])
    return parse_config(data, str(config))


def trainer_for(impl: str, cfg) -> Trainer:
    model = build_training_model(cfg.model, build_dataset("camvid", CAMVID, "train"))
    return Trainer(cfg, model=TransformersSegformer(model) if impl == "transformers" else model)


def seconds_per_iteration(impl: str, config: Path, out: Path, workers: int) -> float:
    """Median time of 10 training iterations after 6 of warm-up, to size the schedule."""
    return median_step_seconds(trainer_for(impl, run_config(config, out, 16, 10, workers)), warmup=6)


def run(label: str, impl: str, config: Path, args) -> None:
    torch.set_num_threads(args.threads)
    per_iteration = seconds_per_iteration(impl, config, args.out / f"{label}-calibration", args.workers)
    iterations = max(10, int(0.97 * args.minutes * 60 / per_iteration))  # the schedule ends inside the budget
    cfg = run_config(config, args.out / label, iterations, args.minutes, args.workers)
    trainer = trainer_for(impl, cfg)
    started = time.monotonic()
    result = trainer.fit(show_progress=False)
    train_seconds = time.monotonic() - started
    val = build_dataset("camvid", CAMVID, "val")
    report = {"run": label, "model": cfg.model.name, "impl": impl, "iterations": result.iteration,
              "planned_iterations": iterations, "train_minutes": round(train_seconds / 60, 1),
              "train_images_per_s": round(result.iteration * cfg.train.batch_size / train_seconds, 2),
              "single": val_scores(trainer.result_model, val, cfg.eval, cfg.data.test_scale)}
    if args.ms_flip_scales:
        ms_flip = cfg.eval.model_copy(update={"mode": "ms-flip", "scales": tuple(args.ms_flip_scales), "flip": True})
        report["ms_flip"] = {"scales": args.ms_flip_scales,
                             **val_scores(trainer.result_model, val, ms_flip, cfg.data.test_scale)}
    (args.out / f"{label}.json").write_text(json.dumps(report, indent=2))


def val_scores(model: nn.Module, val: SegmentationDataset, eval_cfg: EvalSection, test_scale) -> dict:
    """mIoU, aAcc and per-class IoU of ``model`` on ``val`` under ``eval_cfg``."""
    metrics, _ = evaluate(model, val, eval_cfg, test_scale, show_progress=False)
    return {"mIoU": metrics.mIoU, "aAcc": metrics.aAcc,
            "per_class_iou": dict(zip(metrics.class_names, metrics.iou, strict=True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget of every run")
    recipe = Path(__file__).resolve().parents[1] / "configs/segformer/segformer-b0-camvid-30min.yaml"
    parser.add_argument("--configs", type=Path, nargs="+", default=[recipe])
    parser.add_argument("--no-transformers", action="store_true", help="skip the transformers SegFormer run")
    parser.add_argument("--no-transeg", action="store_true", help="only the transformers run, of the first recipe")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes per run")
    parser.add_argument("--sequential", action="store_true", help="one run after another, not side by side")
    parser.add_argument("--out", type=Path, default=Path("runs/camvid_cpu"))
    parser.add_argument("--ms-flip-scales", type=float, nargs="*", default=[1.0, 4 / 3, 5 / 3, 2.0],
                        help="test-time scales of the second evaluation, relative to the recipe's test_scale")
    args = parser.parse_args()
    if args.no_transeg and args.no_transformers:
        parser.error("--no-transeg and --no-transformers leave no run")
    if not CAMVID.is_dir():
        raise SystemExit(f"CamVid not found at {CAMVID}; see ../shared/data/README.md")
    runs = [] if args.no_transeg else [(f"transeg-{load_config(c).model.name}", "transeg", c) for c in args.configs]
    if not args.no_transformers:
        runs.append((f"transformers-{load_config(args.configs[0]).model.name}", "transformers", args.configs[0]))
    args.out.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=run, args=(*r, args)) for r in runs]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated benchmark ends its runs too
    try:
        for process in processes:
            process.start()
            if args.sequential:
                process.join()
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    reports = [json.loads((args.out / f"{label}.json").read_text()) for label, _, _ in runs]
    print(f"CamVid val, from random initialisation, {args.minutes:g} min of training each, "
          f"{args.threads} thread(s) each, runs {'one after another' if args.sequential else 'side by side'}\n")
    print("| | " + " | ".join(r["run"] for r in reports) + " |")
    print("| --- |" + " --- |" * len(reports))
    for key in ("mIoU", "aAcc"):
        print(f"| {key} | " + " | ".join(_scores(r, key) for r in reports) + " |")
    for key in ("iterations", "train_images_per_s"):
        print(f"| {key} | " + " | ".join(str(r[key]) for r in reports) + " |")
    for name in reports[0]["single"]["per_class_iou"]:
        print(f"| IoU {name} | " + " | ".join(_scores(r, "per_class_iou", name) for r in reports) + " |")
    if args.ms_flip_scales:
        print(f"\nsingle: at the recipe's test_scale; ms-flip: at scales {args.ms_flip_scales} of it, "
              "each image and its mirror")


def _scores(report: dict, *keys: str) -> str:
    """The value under ``keys`` of the single-scale evaluation, then ' / ' the ms-flip one if any, in %."""
    values = []
    for kind in ("single", "ms_flip"):
        if kind in report:
            value = report[kind]
            for key in keys:
                value = value[key]
            values.append("n/a" if value != value else f"{value * 100:.2f}")
    return " / ".join(values)


if __name__ == "__main__":
    main()
