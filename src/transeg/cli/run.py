"""Commands that run a model or a dataset: train, eval, predict, data check, demo."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np
from torch import nn

from transeg.api import load_model
from transeg.cli.console import console
from transeg.cli.options import (
    BACKEND_OPTION,
    DEVICE_OPTION,
    OUT_DIR_OPTION,
    OVERRIDES_OPTION,
    PRECISION_OPTION,
    num_classes_option,
    pair_option,
)
from transeg.cli.types import (
    BATCH,
    DIVISOR,
    OUTPUT_DIR,
    POSITIVE,
    SCALES,
    SEED,
    SIDE,
    UNIT_INTERVAL,
    FiniteFloatRange,
    check_output,
)
from transeg.data.annotations.export import EXPORT_FORMATS, write_export
from transeg.data.annotations.importer import FORMATS, import_annotations
from transeg.data.annotations.rasterise import OVERLAP_RULES
from transeg.data.check import check_dataset, diagnose, format_report
from transeg.demo import run_demo
from transeg.engine.distributed import all_reduce_count, distributed_job
from transeg.engine.evaluate import (
    ScaleEvaluation,
    evaluate_test_scales,
    metrics_report,
    require_same_classes,
    save_confusion_pngs,
    write_metrics_json,
)
from transeg.engine.recipe import build_dataset_from_config, load_config
from transeg.engine.train import train
from transeg.errors import TransegError
from transeg.inference.backends import optimize_for_inference
from transeg.inference.modes import passes_per_image
from transeg.inference.predict import expand_images, label_outputs, predict_files
from transeg.inference.video import is_video
from transeg.models.segmentor import Segmentor


def inference_model(segmentor: Segmentor, backend: str, precision: str, images: int, mode: str,
                    scales: Sequence[float], flip: bool, device: str = "cpu") -> nn.Module:
    """``optimize_for_inference`` on ``device`` for a job of ``images`` images, saying so when an ONNX
    export runs."""

    def announce(path: Path) -> None:
        console.print(f"exporting {segmentor.config.name} to ONNX once (cached in {path.parent})")

    passes = images * passes_per_image(mode, scales, flip)
    return optimize_for_inference(segmentor, backend, precision, passes, on_export=announce, device=device)


@click.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@OUT_DIR_OPTION
@num_classes_option()
@click.option("--mode", type=click.Choice(["whole", "slide", "ms-flip"]), default="whole", show_default=True)
@pair_option("--crop", "Sliding-window size H W.")
@pair_option("--stride", "Sliding-window stride H W.")
@click.option("--scales", type=SCALES, default="0.5,0.75,1.0,1.25,1.5,1.75", show_default=True,
              help="Scales for ms-flip, each in (0, 8].")
@click.option("--no-flip", is_flag=True, help="ms-flip without the horizontal flips.")
@click.option("--size-divisor", type=DIVISOR, default=None,
              help="Resize so H and W are multiples (e.g. 32), at most 1024.")
@click.option("--batch-size", type=BATCH, default=4, show_default=True, help="Windows per forward in slide.")
@click.option("--alpha", type=UNIT_INTERVAL, default=0.5, show_default=True, help="Overlay opacity, 0..1.")
@click.option("--no-legend", is_flag=True,
              help="Overlays of the image's size, without the legend of the classes present beside them.")
@click.option("--skip-existing", is_flag=True,
              help="Skip images whose label map and overlay are already in --out (resume a long run).")
@click.option("--format", "export_format", type=click.Choice(EXPORT_FORMATS), default="png", show_default=True,
              help="Also write the label maps for a labelling tool: coco (coco.json, RLE per class), labelstudio "
                   "(labelstudio.json, brush pre-annotations) or cvat (cvat-masks.zip, Segmentation mask 1.1).")
@click.option("--probs", type=click.Choice(["png", "npy"]), is_flag=False, flag_value="png", default=None,
              help="Write <stem>_confidence.png (max class probability x 255); `--probs npy` adds "
                   "<stem>_probs.npy, the (K, H, W) float16 probabilities.")
@click.option("--save-labels", is_flag=True, help="Videos: also write one label PNG per frame.")
@BACKEND_OPTION
@PRECISION_OPTION
@DEVICE_OPTION
def predict(model: str, images: tuple[str, ...], out_dir: Path, num_classes: int | None, mode: str,
            crop: tuple[int, int] | None, stride: tuple[int, int] | None, scales: tuple[float, ...], no_flip: bool,
            size_divisor: int | None, batch_size: int, alpha: float, no_legend: bool, skip_existing: bool,
            export_format: str,
            probs: str | None, save_labels: bool, backend: str, precision: str, device: str) -> None:
    """Segment IMAGES (files, folders, globs or videos) with MODEL; write label PNGs and overlays to --out."""
    segmentor = load_model(model, num_classes)
    paths = [str(p) for p in expand_images(images)]
    videos = [path for path in paths if is_video(Path(path))]
    if export_format != "png" and videos:
        raise TransegError(f"{videos[0]}: --format {export_format} takes images, not videos")
    with distributed_job(device) as info:
        if model == segmentor.config.name and info.is_main:
            console.print(f"[yellow]note:[/] {model} has random weights; pass a checkpoint for real predictions")
        runner = inference_model(segmentor, backend, precision, len(paths) // info.world_size, mode, scales,
                                 not no_flip, str(info.device))
        written = all_reduce_count(len(predict_files(
            runner, paths, out_dir, mode=mode, crop=crop, stride=stride, scales=scales, flip=not no_flip,
            size_divisor=size_divisor, batch_size=batch_size, alpha=alpha, skip_existing=skip_existing,
            probs=probs, legend=not no_legend, save_labels=save_labels, rank=info.rank, world_size=info.world_size,
            device=info.device,
        )), info)
    skipped = f" ({len(paths) - written} already there, skipped)" if written < len(paths) else ""
    if info.is_main:
        console.print(f"wrote {written} label maps and overlays to {out_dir}{skipped}")
        if export_format != "png":
            console.print(f"wrote {export_predictions(export_format, segmentor, paths, out_dir)}")


def export_predictions(fmt: str, segmentor: Segmentor, paths: Sequence[str], out_dir: Path) -> Path:
    """Write the ``fmt`` export of the label maps ``predict`` wrote for ``paths`` to ``out_dir``."""
    config = segmentor.config
    classes = list(config.class_names or [f"class_{i}" for i in range(segmentor.num_classes)])
    pairs = [(Path(p), label) for p, label in zip(paths, label_outputs(paths, out_dir), strict=True)]
    palette = np.asarray(config.palette, np.uint8) if config.palette else None
    return write_export(fmt, pairs, out_dir, classes, palette, model_version=config.name)


@click.command("train")
@click.argument("config", type=click.Path(path_type=Path))
@OVERRIDES_OPTION
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint of output_dir.")
@click.option("--resume-anyway", is_flag=True,
              help="With --resume: continue even if the config differs from the checkpoint's.")
@click.option("--on-bad-sample", type=click.Choice(["error", "skip"]), default=None,
              help="Stop on an unreadable or invalid training sample, or skip it (logged once). "
                   "Default: train.on_bad_sample.")
def train_command(config: Path, overrides: tuple[str, ...], resume: bool, resume_anyway: bool,
                  on_bad_sample: str | None) -> None:
    """Train the model described by CONFIG (YAML); run under torchrun for several processes."""
    overrides = (*overrides, *([f"train.on_bad_sample={on_bad_sample}"] if on_bad_sample else []))
    if resume_anyway and not resume:
        raise TransegError("--resume-anyway needs --resume")
    result = train(load_config(config, list(overrides)), resume=resume, resume_anyway=resume_anyway)
    best = f"; best val mIoU {result.best_miou * 100:.2f}" if result.best_miou is not None else ""
    stop = f" (stopped: {result.stopped_early})" if result.stopped_early else ""
    console.print(f"trained to iteration {result.iteration}{stop}{best}; model in {result.output_dir}")


@click.command("eval")
@click.argument("model")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
              help="Training config whose data and eval sections are used.")
@OVERRIDES_OPTION
@click.option("--split", default=None, help="Split to evaluate (default: data.val_split).")
@click.option("--mode", type=click.Choice(["whole", "slide", "ms-flip"]), default=None, help="Inference mode.")
@click.option("--out", "out_dir", type=OUTPUT_DIR, default=None,
              help="Folder for metrics.json and confusion.png (default: beside the model).")
@click.option("--test-scale", "test_scales", type=SIDE, nargs=2, multiple=True, metavar="W H",
              help="Keep-ratio test resize as data.test_scale (long and short edge at most max(W, H) and "
                   "min(W, H)); repeat it to evaluate at several resolutions, one metrics block each.")
@click.option("--on-bad-sample", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="Stop on an unreadable or invalid sample (labels checked as `data check` does), or skip it.")
@click.option("--by-object-size", is_flag=True,
              help="Add mIoU on small / medium / large ground-truth segments (Segmenter Table 4) to metrics.json.")
@click.option("--size-thresholds", type=POSITIVE, nargs=2, default=None, metavar="A B",
              help="Pixel areas separating small | medium | large segments (default 1024 9216: COCO's 32² and "
                   "96²); implies --by-object-size.")
@BACKEND_OPTION
@PRECISION_OPTION
@DEVICE_OPTION
def eval_command(model: str, config_path: Path, overrides: tuple[str, ...], split: str | None, mode: str | None,
                 out_dir: Path | None, test_scales: tuple[tuple[int, int], ...], on_bad_sample: str,
                 by_object_size: bool,
                 size_thresholds: tuple[int, int] | None, backend: str, precision: str, device: str) -> None:
    """Evaluate MODEL (any checkpoint) on a dataset: mIoU, per-class IoU/Acc/Dice, confusion matrix."""
    overrides = (*overrides, *([f"eval.mode={mode}"] if mode else []))
    if by_object_size or size_thresholds:
        overrides = (*overrides, "eval.by_object_size=true")
    if size_thresholds:
        overrides = (*overrides, f"eval.size_thresholds=[{size_thresholds[0]}, {size_thresholds[1]}]")
    cfg = load_config(config_path, list(overrides))
    scales = list(dict.fromkeys(test_scales)) or [cfg.data.test_scale]  # none given: the config's
    segmentor = load_model(model)
    split = split or cfg.data.val_split
    if split is None:
        raise TransegError(f"{config_path}: data.val_split is null; name the split with --split")
    dataset = build_dataset_from_config(cfg.data, split)
    require_same_classes(segmentor, dataset, model)
    out_dir = out_dir or check_output(str(Path(model).parent if Path(model).exists() else Path(".")), "dir")
    with distributed_job(device) as info:
        runner = inference_model(segmentor, backend, precision, len(dataset) * len(scales) // info.world_size,
                                 cfg.eval.mode, cfg.eval.scales, cfg.eval.flip, str(info.device))

        def show(result: ScaleEvaluation) -> None:
            if len(scales) > 1 and info.is_main:
                click.echo(f"test scale {result.label}")
            if info.is_main:
                click.echo(result.metrics.format_table())

        results = evaluate_test_scales(runner, dataset, cfg.eval, scales, cfg.data.size_divisor, on_result=show,
                                       on_bad_sample=on_bad_sample, info=info)
    if not info.is_main:  # every process holds the reduced results; the first writes them
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    written = save_confusion_pngs(results, out_dir, list(dataset.classes))
    report = metrics_report(results, model=model, split=split, mode=cfg.eval.mode, precision=precision)
    if len(scales) > 1:
        click.echo("mIoU by test scale: " + ", ".join(
            f"{k} " + ("n/a" if v["mIoU"] is None else f"{v['mIoU'] * 100:.2f}")
            for k, v in report["test_scales"].items()))
    write_metrics_json(report, out_dir / "metrics.json")
    console.print(f"wrote {out_dir / 'metrics.json'} and {', '.join(str(p) for p in written)}")


@click.group("data")
def data_group() -> None:
    """Dataset tools."""


@data_group.command("check")
@click.argument("config", type=click.Path(path_type=Path))
@OVERRIDES_OPTION
@click.option("--split", default=None, help="Split to check (default: both train and val).")
@click.option("--limit", type=POSITIVE, default=None, help="Check only the first N pairs of each split.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def data_check(config: Path, overrides: tuple[str, ...], split: str | None, limit: int | None,
               as_json: bool) -> None:
    """Scan the dataset of CONFIG: pairing, sizes, label values, class histogram, and hints."""
    cfg = load_config(config, list(overrides))
    splits = [split] if split else [s for s in (cfg.data.train_split, cfg.data.val_split) if s]
    failed = False
    for name in splits:
        report = check_dataset(build_dataset_from_config(cfg.data, name), limit)
        if as_json:
            click.echo(json.dumps({"split": name, **report.to_dict()}))
        else:
            click.echo(format_report(report))
        for hint in diagnose(report):
            click.echo(f"  hint: {hint}")
        failed |= not report.ok
    if failed:
        sys.exit(1)


@data_group.command("import")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(FORMATS))
@click.argument("source", type=click.Path(path_type=Path))
@OUT_DIR_OPTION
@click.option("--images", "images", type=click.Path(path_type=Path), default=None,
              help="Folder of the images the export names (default: beside the export).")
@click.option("--val-fraction", type=FiniteFloatRange(0.0, 0.9), default=0.2, show_default=True,
              help="Share of the images drawn at random into the val split.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the train/val draw.")
@click.option("--background", default="background", show_default=True,
              help="Class of the unannotated pixels (class 0 unless a category has this name).")
@click.option("--no-background", is_flag=True, help="Leave unannotated pixels unlabelled (255, ignored).")
@click.option("--overlap", type=click.Choice(OVERLAP_RULES), default="last", show_default=True,
              help="Who owns a pixel two shapes cover: the one listed last, first, or the smaller one.")
@click.option("--on-bad-annotation", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="Stop at the first bad annotation (naming its file and id), or skip it and count.")
def data_import(fmt: str, source: Path, out_dir: Path, images: Path | None, val_fraction: float, seed: int,
                background: str, no_background: bool, overlap: str, on_bad_annotation: str) -> None:
    """Convert a labelling tool's export (coco, cvat, labelme, labelstudio, voc) into a folder dataset."""
    if not background.strip():
        raise TransegError("--background must name a class (or pass --no-background)")
    summary = import_annotations(fmt, source, out_dir, images=images,
                                 background=None if no_background else background, overlap=overlap,
                                 val_fraction=val_fraction, seed=seed, on_bad_annotation=on_bad_annotation)
    splits = ", ".join(f"{n} {s}" for s, n in summary.splits.items())
    console.print(f"wrote {splits} images, {len(summary.classes)} classes to {out_dir} "
                  f"(use dataset: folder, root: {out_dir})")
    if summary.skipped:
        console.print(f"[yellow]skipped {summary.skipped} bad annotation(s)[/]; the first: {summary.first_problem}")


@click.command()
@click.option("--out", "out_dir", type=OUTPUT_DIR, default="demo-output", show_default=True)
def demo(out_dir: Path) -> None:
    """Train segformer-b0 on generated scenes (CPU, a few minutes) and evaluate it on held-out ones."""
    metrics = run_demo(out_dir)
    click.echo(metrics.format_table())
    console.print(f"held-out mIoU {metrics.mIoU * 100:.2f}; overlays, metrics.json and the model in {out_dir}")
