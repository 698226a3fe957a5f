"""``transeg demo``: generate the synthetic scenes, train segformer-b0 on them on the CPU, evaluate
on the held-out split and write overlays and metrics. Needs no download and no accelerator."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from transeg.data.datasets import build_dataset
from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.evaluate import build_predictor, evaluate
from transeg.engine.recipe import TrainConfig, parse_config
from transeg.engine.train import train
from transeg.metrics import SegMetrics
from transeg.viz import overlay, overlay_legend, save_confusion_png
from transeg.weights.load import load_model


@dataclass(frozen=True)
class DemoSettings:
    num_train: int = 400
    num_val: int = 64
    size: tuple[int, int] = (128, 128)
    iterations: int = 600
    batch_size: int = 16
    lr: float = 2e-3
    ratio_range: tuple[float, float] = (0.8, 1.25)
    seed: int = 0


def demo_config(out_dir: Path, settings: DemoSettings) -> TrainConfig:
    """The recipe: SegFormer's (AdamW, decoder lr x10, warm-up + poly), scaled to a small CPU run
    from random initialisation (a larger lr, a short warm-up)."""
    h, w = settings.size
    return parse_config({
        "model": {"name": "segformer-b0"},
        "data": {"dataset": "folder", "root": str(out_dir / "data"), "crop_size": [h, w], "scale": [w, h],
                 "ratio_range": list(settings.ratio_range), "test_scale": None, "num_workers": 1},
        "optimizer": {"type": "adamw", "lr": settings.lr, "weight_decay": 0.01},
        "schedule": {"iterations": settings.iterations, "warmup_iters": settings.iterations // 20},
        "train": {"batch_size": settings.batch_size, "seed": settings.seed, "log_interval": 25,
                  "eval_interval": settings.iterations, "checkpoint_interval": settings.iterations // 2},
        "output_dir": str(out_dir / "run"),
    }, source="demo")


def run_demo(out_dir: str | Path, settings: DemoSettings | None = None, show_progress: bool = True,
             num_overlays: int = 8) -> SegMetrics:
    """Run the whole demo into ``out_dir``; returns the held-out metrics."""
    settings = settings or DemoSettings()
    out_dir = Path(out_dir)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    started = time.monotonic()
    write_synthetic_dataset(out_dir / "data", settings.num_train, settings.num_val, settings.size, settings.seed)
    cfg = demo_config(out_dir, settings)
    result = train(cfg, show_progress=show_progress)
    model = load_model(result.output_dir / "model.safetensors")
    val = build_dataset("folder", cfg.data.root, "val")
    metrics, matrix = evaluate(model, val, cfg.eval, show_progress=show_progress)
    save_confusion_png(matrix, out_dir / "confusion.png", list(val.classes))
    predictor = build_predictor(model, cfg.eval)
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    for i in range(min(num_overlays, len(val))):
        sample = val.load(i)
        predicted_labels = predictor.predict(sample["image"])
        predicted = overlay(sample["image"], predicted_labels, val.palette)
        truth = overlay(sample["image"], sample["label"], val.palette)
        both = np.concatenate([sample["image"], truth, predicted], axis=1)
        Image.fromarray(overlay_legend(both, np.stack([sample["label"], predicted_labels]), val.palette,
                                       list(val.classes))).save(
            out_dir / "overlays" / f"{Path(sample['path']).stem}.png")
    report = {"seconds": round(time.monotonic() - started, 1), "iterations": result.iteration,
              "model": str(result.output_dir / "model.safetensors"), **metrics.to_dict()}
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    return metrics
