"""Commands that measure a model: bench (speed), robustness (corruptions), erf (receptive fields)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from transeg.analysis.attention_maps import attention_of_file
from transeg.analysis.attention_maps import write_outputs as write_attention_outputs
from transeg.analysis.bench import bench_inference, bench_train_step
from transeg.analysis.erf import erf_of_files
from transeg.analysis.erf import write_outputs as write_erf_outputs
from transeg.analysis.robustness import (
    RobustnessSettings,
    format_table,
    parse_corruptions,
    parse_severities,
    run_robustness,
)
from transeg.analysis.robustness import write_outputs as write_robustness_outputs
from transeg.api import load_model
from transeg.cli.console import console
from transeg.cli.options import DEVICE_OPTION, JSON_OPTION, OUT_DIR_OPTION, num_classes_option, pair_option, size_option
from transeg.cli.types import BATCH, COUNT, COUNT_OR_ZERO, MAX_COUNT, MAX_SIDE, OUTPUT_DIR, POSITIVE, SEED
from transeg.data.datasets import build_dataset
from transeg.errors import TransegError
from transeg.inference.predict import expand_images


@click.command()
@click.argument("model")
@num_classes_option("zoo names; default 150")
@size_option()
@click.option("--batch", type=BATCH, default=1, show_default=True)
@click.option("--threads", type=COUNT, default=None, help="torch (and ONNX Runtime) threads.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="bf16: autocast (CPUs with AVX512-BF16/AMX, GPUs); fp16: autocast on a GPU.")
@click.option("--backend", type=click.Choice(["eager", "compile", "onnx"]), default="eager", show_default=True)
@DEVICE_OPTION
@click.option("--train", "train_step", is_flag=True, help="Time a training step instead of inference.")
@click.option("--warmup", type=COUNT_OR_ZERO, default=3, show_default=True)
@click.option("--repeats", type=COUNT, default=10, show_default=True)
@JSON_OPTION
def bench(model: str, num_classes: int | None, size: tuple[int, int], batch: int, threads: int | None,
          precision: str, backend: str, device: str, train_step: bool, warmup: int, repeats: int,
          as_json: bool) -> None:
    """Latency (median, min, max), images/s and peak memory of MODEL's inference or training step."""
    if threads is not None:
        torch.set_num_threads(threads)
    segmentor = load_model(model, num_classes)
    if train_step:
        result = bench_train_step(segmentor, size, batch, precision, warmup, repeats, device, backend)
    else:
        result = bench_inference(segmentor, size, batch, backend, precision, warmup, repeats, device)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    r = result
    click.echo(f"{r.model} {r.task}  {r.backend} {r.precision}  {r.device}, {r.threads} threads  "
               f"batch {r.batch} x {r.size[0]}x{r.size[1]}")
    click.echo(f"  latency  median {r.latency_ms_median:.1f} ms  (min {r.latency_ms_min:.1f}, "
               f"max {r.latency_ms_max:.1f}; {r.repeats} runs after {warmup} warm-up)")
    click.echo(f"  {r.images_per_s:.2f} images/s   peak memory {r.peak_memory_mb:.0f} MB")


@click.command("robustness")
@click.argument("model")
@click.option("--dataset", "dataset_name", required=True, help="Dataset type (camvid, cityscapes, folder, …).")
@click.option("--data-root", type=click.Path(path_type=Path), required=True, help="Dataset folder.")
@click.option("--split", default="val", show_default=True)
@click.option("--corruptions", default=None, help="Comma-separated names (default: the 16 of SegFormer Table 5).")
@click.option("--severities", default="1,2,3,4,5", show_default=True, help="Comma-separated, in 1..5.")
@click.option("--limit", type=POSITIVE, default=None, help="Evaluate N images spread evenly over the split.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the corruptions.")
@click.option("--cache", type=OUTPUT_DIR, default=None,
              help="Folder keeping the corrupted images (PNG) for later runs.")
@click.option("--mode", type=click.Choice(["whole", "slide"]), default="whole", show_default=True)
@pair_option("--crop", "Slide window H W (default: the dataset's recipe).")
@pair_option("--stride", "Slide stride H W.")
@pair_option("--test-scale", "Keep-ratio resize (long, short) before inference.")
@DEVICE_OPTION
@OUT_DIR_OPTION
def robustness_command(model: str, dataset_name: str, data_root: Path, split: str, corruptions: str | None,
                       severities: str, limit: int | None, seed: int, cache: Path | None, mode: str,
                       crop: tuple[int, int] | None, stride: tuple[int, int] | None,
                       test_scale: tuple[int, int] | None, device: str, out_dir: Path) -> None:
    """mIoU of MODEL under common corruptions x severities (SegFormer Table 5, Cityscapes-C style)."""
    settings = RobustnessSettings(parse_corruptions(corruptions), parse_severities(severities), limit, seed, cache,
                                  mode, crop, stride, test_scale, device=device)
    dataset = build_dataset(dataset_name, data_root, split)
    segmentor = load_model(model, dataset.num_classes)
    if model == segmentor.config.name:
        console.print(f"[yellow]note:[/] {model} has random weights; pass a checkpoint for real scores")
    result = run_robustness(segmentor, dataset, settings, dataset_name, console=console)
    click.echo(format_table(result))
    write_robustness_outputs(result, out_dir, segmentor.config.name, title=f"{segmentor.config.name} on {dataset.name}",
                             model_path=model, dataset=dataset_name, split=split, seed=seed, limit=limit, mode=mode)
    console.print(f"wrote robustness.json, robustness.csv, robustness_by_severity.csv and robustness.png to "
                  f"{out_dir} ({result.wall_seconds:.0f} s)")


@click.command("attention")
@click.argument("model")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--patch", type=click.IntRange(0, MAX_SIDE), nargs=2, required=True, metavar="Y X",
              help="The query patch: row and column on the ceil(H/p) x ceil(W/p) patch grid, from 0.")
@click.option("--layer", type=click.IntRange(0, MAX_COUNT), default=0, show_default=True,
              help="Encoder block, from 0 (the first, as in Segmenter Fig. 1).")
@pair_option("--size", "Resize the image to H x W first (default: its own size).", metavar="H W")
@num_classes_option()
@OUT_DIR_OPTION
@DEVICE_OPTION
def attention_command(model: str, image: Path, patch: tuple[int, int], layer: int, size: tuple[int, int] | None,
                      num_classes: int | None, out_dir: Path, device: str) -> None:
    """Per-head attention maps (Segmenter Fig. 1) of one patch of IMAGE in a ViT-based MODEL:
    head_XX.png, attention.png and attention.json in --out."""
    result, shown = attention_of_file(load_model(model, num_classes).to(device), image, patch, layer, size)
    written = write_attention_outputs(result, shown, out_dir, source=str(image))
    console.print(f"wrote {len(written)} files to {out_dir} (patch {patch[0]} {patch[1]}, layer {layer})")


@click.command("erf")
@click.argument("model")
@click.argument("images", nargs=-1)
@OUT_DIR_OPTION
@size_option("Input H W; every image is resized to it.")
@click.option("--limit", type=POSITIVE, default=None, help="Use only the first N images.")
@num_classes_option()
@click.option("--scale", type=click.Choice(["log", "sqrt"]), default="log", show_default=True,
              help="Display scale of the heatmaps, each divided by its maximum (log: 3 decades).")
@DEVICE_OPTION
def erf_command(model: str, images: tuple[str, ...], out_dir: Path, size: tuple[int, int], limit: int | None,
                num_classes: int | None, scale: str, device: str) -> None:
    """Effective receptive fields (SegFormer Fig. 3) of each encoder stage and of the head of MODEL,
    averaged over IMAGES (files, folders or globs): erf.png, erf_<name>.png and erf.json in --out."""
    if not images:
        raise TransegError("no images given: pass image files, folders or globs after MODEL")
    paths = expand_images(images)[:limit]
    segmentor = load_model(model, num_classes).to(device)
    result = erf_of_files(segmentor, paths, size)
    source = None if model == segmentor.config.name else model
    write_erf_outputs(result, out_dir, segmentor.config.name, scale, source=source)
    for title, (h, w), s in zip(result.titles, result.feature_sizes, result.summaries, strict=True):
        radii = "no gradient" if s["radius_50_px"] is None else \
            f"50% radius {s['radius_50_px']:7.1f} px  90% radius {s['radius_90_px']:7.1f} px  " \
            f"peak/mean {s['peak_to_mean']:8.1f}"
        click.echo(f"{title:<8} output {h:>4}x{w:<4}  {radii}")
    console.print(f"wrote erf.png, erf_<stage|head>.png and erf.json to {out_dir} ({result.images} images, "
                  f"{size[0]}x{size[1]})")
