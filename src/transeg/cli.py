"""The ``transeg`` command line: a thin layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console

from transeg.errors import TransegError, one_line

console = Console(stderr=True)


class _Group(click.Group):
    """Turns a TransegError into one line on stderr and exit code 2 (a traceback with --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TransegError as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="transeg")
def cli(debug: bool) -> None:
    """Transformer semantic segmentation: SegFormer, Segmenter, SegDeformer."""


def resolve_model(spec: str, num_classes: int | None = None):
    """A model from a zoo name (random weights) or from any supported checkpoint path."""
    from transeg.api import create_model
    from transeg.models.zoo import ZOO
    from transeg.weights.load import load_model

    if spec in ZOO:
        return create_model(spec, num_classes=num_classes)
    if not Path(spec).exists() and "/" not in spec and "." not in spec:
        raise TransegError(f"{spec!r} is neither a model name (see `transeg list`) nor an existing path")
    model = load_model(spec)
    if num_classes is not None and num_classes != model.num_classes:
        raise TransegError(f"{spec}: the checkpoint has {model.num_classes} classes, not {num_classes}")
    return model


BACKEND_OPTION = click.option(
    "--backend", type=click.Choice(["auto", "eager", "onnx"]), default="auto", show_default=True,
    help="auto: ONNX Runtime (exported once, cached) for fp32 on the CPU when the onnx extra is installed, "
         "else PyTorch eager.")
PRECISION_OPTION = click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
                                show_default=True, help="bf16: eager under autocast (AVX512-BF16/AMX CPUs, GPUs).")


def inference_model(segmentor, backend: str, precision: str, images: int, mode: str = "whole",
                    scales: tuple[float, ...] = (), flip: bool = False):
    """``optimize_for_inference`` for a job of ``images`` images (each run at every scale, and
    flipped, in ms-flip mode), saying so when an ONNX export runs."""
    from transeg.inference.backends import optimize_for_inference

    def announce(path: Path) -> None:
        console.print(f"exporting {segmentor.config.name} to ONNX once (cached in {path.parent})")

    passes = images * (len(scales) * (2 if flip else 1) if mode == "ms-flip" else 1)
    return optimize_for_inference(segmentor, backend, precision, passes, on_export=announce)


@cli.command("list")
def list_command() -> None:
    """List the model names."""
    from transeg.models.zoo import list_models

    for name in list_models():
        click.echo(name)


@cli.command()
@click.argument("model")
@click.option("--num-classes", type=int, default=None, help="Classes of the head (zoo names; default 150).")
@click.option("--size", type=(int, int), default=(512, 512), show_default=True, help="Input H W.")
@click.option("--decoder-width", type=int, default=None, help="Replace the decoder width C (zoo names).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(model: str, num_classes: int | None, size: tuple[int, int], decoder_width: int | None,
         as_json: bool) -> None:
    """Parameters (encoder, decoder, total) and GMACs of MODEL at one input size."""
    from transeg.analysis.complexity import model_complexity
    from transeg.models.factory import build_model
    from transeg.models.zoo import ZOO, model_config, with_decoder_width

    if decoder_width is not None:
        if model not in ZOO:
            raise TransegError("--decoder-width applies to model names, not checkpoints")
        segmentor = build_model(with_decoder_width(model_config(model, num_classes), decoder_width))
    else:
        segmentor = resolve_model(model, num_classes)
    stats = model_complexity(segmentor, size)
    if as_json:
        click.echo(json.dumps({"model": segmentor.config.name, "num_classes": segmentor.num_classes,
                               "size": list(size), **stats}))
        return
    p = stats["params"]
    click.echo(f"{segmentor.config.name}  ({segmentor.num_classes} classes, input {size[0]}x{size[1]})")
    click.echo(f"  params   encoder {p['encoder'] / 1e6:7.2f} M   decoder {p['decoder'] / 1e6:6.2f} M"
               f"   total {p['total'] / 1e6:7.2f} M")
    click.echo(f"  GMACs    {stats['gmacs']:.2f}  (the papers' count: one multiply-add once, attention included)")
    click.echo(f"           {stats['gmacs_executed']:.2f}  executed by transeg (decoder projections composed)")


@cli.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--num-classes", type=int, default=None, help="Classes of the head (zoo names only).")
@click.option("--mode", type=click.Choice(["whole", "slide", "ms-flip"]), default="whole", show_default=True)
@click.option("--crop", type=(int, int), default=None, help="Sliding-window size H W.")
@click.option("--stride", type=(int, int), default=None, help="Sliding-window stride H W.")
@click.option("--scales", default="0.5,0.75,1.0,1.25,1.5,1.75", show_default=True,
              help="Scales for ms-flip.")
@click.option("--no-flip", is_flag=True, help="ms-flip without the horizontal flips.")
@click.option("--size-divisor", type=int, default=None, help="Resize so H and W are multiples (e.g. 32).")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Windows per forward in slide.")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Overlay opacity.")
@BACKEND_OPTION
@PRECISION_OPTION
def predict(model: str, images: tuple[str, ...], out_dir: Path, num_classes: int | None, mode: str,
            crop: tuple[int, int] | None, stride: tuple[int, int] | None, scales: str, no_flip: bool,
            size_divisor: int | None, batch_size: int, alpha: float, backend: str, precision: str) -> None:
    """Segment IMAGES (files, folders or globs) with MODEL; write label PNGs and overlays to --out."""
    from transeg.inference.files import expand_images, predict_files

    try:
        scale_values = tuple(float(s) for s in scales.split(","))
    except ValueError:
        raise TransegError(f"--scales: expected comma-separated numbers, got {scales!r}") from None
    segmentor = resolve_model(model, num_classes)
    if model == segmentor.config.name:
        console.print(f"[yellow]note:[/] {model} has random weights; pass a checkpoint for real predictions")
    paths = [str(p) for p in expand_images(images)]
    runner = inference_model(segmentor, backend, precision, len(paths), mode, scale_values, not no_flip)
    written = predict_files(
        runner, paths, out_dir, mode=mode, crop=crop, stride=stride, scales=scale_values, flip=not no_flip,
        size_divisor=size_divisor, batch_size=batch_size, alpha=alpha,
    )
    console.print(f"wrote {len(written)} label maps and overlays to {out_dir}")


@cli.command("erf")
@click.argument("model")
@click.argument("images", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--size", type=(int, int), default=(512, 512), show_default=True,
              help="Input H W; every image is resized to it.")
@click.option("--limit", type=int, default=None, help="Use only the first N images.")
@click.option("--num-classes", type=int, default=None, help="Classes of the head (zoo names only).")
@click.option("--scale", type=click.Choice(["log", "sqrt"]), default="log", show_default=True,
              help="Display scale of the heatmaps, each divided by its maximum (log: 3 decades).")
def erf_command(model: str, images: tuple[str, ...], out_dir: Path, size: tuple[int, int], limit: int | None,
                num_classes: int | None, scale: str) -> None:
    """Effective receptive fields (SegFormer Fig. 3) of each encoder stage and of the head of MODEL,
    averaged over IMAGES (files, folders or globs): erf.png, erf_<name>.png and erf.json in --out."""
    from transeg.analysis.erf import erf_of_files, write_outputs
    from transeg.inference.files import expand_images

    if not images:
        raise TransegError("no images given: pass image files, folders or globs after MODEL")
    if limit is not None and limit < 1:
        raise TransegError(f"--limit must be at least 1, got {limit}")
    paths = expand_images(images)[:limit]
    segmentor = resolve_model(model, num_classes)
    result = erf_of_files(segmentor, paths, size)
    source = None if model == segmentor.config.name else model
    write_outputs(result, out_dir, segmentor.config.name, scale, source=source)
    for title, (h, w), s in zip(result.titles, result.feature_sizes, result.summaries, strict=True):
        radii = "no gradient" if s["radius_50_px"] is None else \
            f"50% radius {s['radius_50_px']:7.1f} px  90% radius {s['radius_90_px']:7.1f} px  " \
            f"peak/mean {s['peak_to_mean']:8.1f}"
        click.echo(f"{title:<8} output {h:>4}x{w:<4}  {radii}")
    console.print(f"wrote erf.png, erf_<stage|head>.png and erf.json to {out_dir} ({result.images} images, "
                  f"{size[0]}x{size[1]})")


@cli.command()
@click.argument("model")
@click.option("--num-classes", type=int, default=None, help="Classes of the head (zoo names; default 150).")
@click.option("--size", type=(int, int), default=(512, 512), show_default=True, help="Input H W.")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--threads", type=int, default=None, help="torch (and ONNX Runtime) threads.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--backend", type=click.Choice(["eager", "compile", "onnx"]), default="eager", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--train", "train_step", is_flag=True, help="Time a training step instead of inference.")
@click.option("--warmup", type=int, default=3, show_default=True)
@click.option("--repeats", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bench(model: str, num_classes: int | None, size: tuple[int, int], batch: int, threads: int | None,
          precision: str, backend: str, device: str, train_step: bool, warmup: int, repeats: int,
          as_json: bool) -> None:
    """Latency (median, min, max), images/s and peak memory of MODEL's inference or training step."""
    import torch

    from transeg.analysis.bench import bench_inference, bench_train_step

    if threads is not None:
        torch.set_num_threads(threads)
    segmentor = resolve_model(model, num_classes)
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


@cli.command("export")
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output .onnx file.")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--num-classes", type=int, default=None, help="Classes of the head (zoo names only).")
@click.option("--size", type=(int, int), default=None, help="Fix the input H W (default: dynamic; Swin needs it).")
def export_command(model: str, fmt: str, out: Path, opset: int, num_classes: int | None,
                   size: tuple[int, int] | None) -> None:
    """Export MODEL to ONNX with dynamic batch, height and width (or a fixed --size)."""
    from transeg.inference.export import export_onnx

    segmentor = resolve_model(model, num_classes)
    with console.status(f"exporting {segmentor.config.name} to ONNX"):
        path = export_onnx(segmentor, out, opset=opset, size=size)
    shape = "(B, 3, H, W)" if size is None else f"(B, 3, {size[0]}, {size[1]})"
    console.print(f"wrote {path} (input 'image' {shape} float32, normalised; output 'logits')")


@cli.command("convert")
@click.argument("source")
@click.option("--to", "target", type=click.Choice(["transeg", "hf"]), default="transeg", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output .safetensors file (transeg) or directory (hf).")
def convert_command(source: str, target: str, out: Path) -> None:
    """Convert a checkpoint (official, mmseg 0.x, transformers, transeg) to transeg or transformers format."""
    from transeg.weights.load import load_model
    from transeg.weights.native import save_model
    from transeg.weights.segformer import save_hf_pretrained

    model = load_model(source)
    written = save_model(model, out) if target == "transeg" else save_hf_pretrained(model, out)
    console.print(f"wrote {written} ({model.config.name}, {model.num_classes} classes)")


@cli.command("train")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint of output_dir.")
@click.option("--on-bad-sample", type=click.Choice(["error", "skip"]), default=None,
              help="Stop on an unreadable or invalid training sample, or skip it (logged once). "
                   "Default: train.on_bad_sample.")
def train_command(config: Path, overrides: tuple[str, ...], resume: bool, on_bad_sample: str | None) -> None:
    """Train the model described by CONFIG (YAML); run under torchrun for several processes."""
    from transeg.engine.recipe import load_config
    from transeg.engine.train import train

    overrides = (*overrides, *([f"train.on_bad_sample={on_bad_sample}"] if on_bad_sample else []))
    result = train(load_config(config, list(overrides)), resume=resume)
    best = f"; best val mIoU {result.best_miou * 100:.2f}" if result.best_miou is not None else ""
    stop = f" (stopped: {result.stopped_early})" if result.stopped_early else ""
    console.print(f"trained to iteration {result.iteration}{stop}{best}; model in {result.output_dir}")


@cli.command("eval")
@click.argument("model")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
              help="Training config whose data and eval sections are used.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value.")
@click.option("--split", default=None, help="Split to evaluate (default: data.val_split).")
@click.option("--mode", type=click.Choice(["whole", "slide", "ms-flip"]), default=None, help="Inference mode.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for metrics.json and confusion.png (default: beside the model).")
@click.option("--test-scale", "test_scales", type=(int, int), multiple=True, metavar="W H",
              help="Keep-ratio test resize as data.test_scale (long and short edge at most max(W, H) and "
                   "min(W, H)); repeat it to evaluate at several resolutions, one metrics block each.")
@BACKEND_OPTION
@PRECISION_OPTION
def eval_command(model: str, config_path: Path, overrides: tuple[str, ...], split: str | None, mode: str | None,
                 out_dir: Path | None, test_scales: tuple[tuple[int, int], ...], backend: str, precision: str) -> None:
    """Evaluate MODEL (any checkpoint) on a dataset: mIoU, per-class IoU/Acc/Dice, confusion matrix."""
    from transeg.data.datasets import build_dataset
    from transeg.engine.evaluate import evaluate
    from transeg.engine.recipe import load_config
    from transeg.viz import save_confusion_png

    overrides = (*overrides, *([f"eval.mode={mode}"] if mode else []))
    cfg = load_config(config_path, list(overrides))
    if any(min(scale) < 1 for scale in test_scales):
        raise TransegError(f"--test-scale: W and H must be positive, got {' '.join(map(str, test_scales))}")
    scales = list(dict.fromkeys(test_scales)) or [cfg.data.test_scale]  # none given: the config's
    segmentor = resolve_model(model)
    split = split or cfg.data.val_split
    if split is None:
        raise TransegError(f"{config_path}: data.val_split is null; name the split with --split")
    dataset = build_dataset(cfg.data.dataset, cfg.data.root, split, **cfg.data.options)
    if dataset.num_classes != segmentor.num_classes:
        raise TransegError(f"{model}: {segmentor.num_classes} classes, the dataset has {dataset.num_classes}")
    runner = inference_model(segmentor, backend, precision, len(dataset) * len(scales), cfg.eval.mode,
                             cfg.eval.scales, cfg.eval.flip)
    out_dir = out_dir or (Path(model).parent if Path(model).exists() else Path("."))
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {"model": model, "split": split, "mode": cfg.eval.mode, "precision": precision}
    blocks, written = {}, []
    for scale in scales:
        label = "none" if scale is None else f"{scale[0]}x{scale[1]}"
        metrics, matrix = evaluate(runner, dataset, cfg.eval, scale, cfg.data.size_divisor)
        if len(scales) > 1:
            click.echo(f"test scale {label}")
        click.echo(metrics.format_table())
        blocks[label] = {"test_scale": None if scale is None else list(scale), **metrics.to_dict()}
        written.append(out_dir / ("confusion.png" if len(scales) == 1 else f"confusion_{label}.png"))
        save_confusion_png(matrix, written[-1], list(dataset.classes))
    if len(scales) == 1:  # one block, flat as before
        result = {**header, **next(iter(blocks.values()))}
    else:
        result = {**header, "test_scales": blocks}
        click.echo("mIoU by test scale: " + ", ".join(
            f"{k} " + ("n/a" if v["mIoU"] is None else f"{v['mIoU'] * 100:.2f}") for k, v in blocks.items()))
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    console.print(f"wrote {out_dir / 'metrics.json'} and {', '.join(str(p) for p in written)}")


@cli.command("robustness")
@click.argument("model")
@click.option("--dataset", "dataset_name", required=True, help="Dataset type (camvid, cityscapes, folder, …).")
@click.option("--data-root", type=click.Path(path_type=Path), required=True, help="Dataset folder.")
@click.option("--split", default="val", show_default=True)
@click.option("--corruptions", default=None, help="Comma-separated names (default: the 16 of SegFormer Table 5).")
@click.option("--severities", default="1,2,3,4,5", show_default=True, help="Comma-separated, in 1..5.")
@click.option("--limit", type=int, default=None, help="Evaluate N images spread evenly over the split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the corruptions.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Folder keeping the corrupted images (PNG) for later runs.")
@click.option("--mode", type=click.Choice(["whole", "slide"]), default="whole", show_default=True)
@click.option("--crop", type=(int, int), default=None, help="Slide window H W (default: the dataset's recipe).")
@click.option("--stride", type=(int, int), default=None, help="Slide stride H W.")
@click.option("--test-scale", type=(int, int), default=None, help="Keep-ratio resize (long, short) before inference.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
def robustness_command(model: str, dataset_name: str, data_root: Path, split: str, corruptions: str | None,
                       severities: str, limit: int | None, seed: int, cache: Path | None, mode: str,
                       crop: tuple[int, int] | None, stride: tuple[int, int] | None,
                       test_scale: tuple[int, int] | None, device: str, out_dir: Path) -> None:
    """mIoU of MODEL under common corruptions x severities (SegFormer Table 5, Cityscapes-C style)."""
    from transeg.analysis.robustness import (
        RobustnessSettings,
        format_table,
        parse_corruptions,
        parse_severities,
        run_robustness,
        write_outputs,
    )
    from transeg.data.datasets import build_dataset

    settings = RobustnessSettings(parse_corruptions(corruptions), parse_severities(severities), limit, seed, cache,
                                  mode, crop, stride, test_scale, device=device)
    dataset = build_dataset(dataset_name, data_root, split)
    segmentor = resolve_model(model, dataset.num_classes)
    if model == segmentor.config.name:
        console.print(f"[yellow]note:[/] {model} has random weights; pass a checkpoint for real scores")
    result = run_robustness(segmentor, dataset, settings, dataset_name, console=console)
    click.echo(format_table(result))
    write_outputs(result, out_dir, segmentor.config.name, title=f"{segmentor.config.name} on {dataset.name}",
                  model_path=model, dataset=dataset_name, split=split, seed=seed, limit=limit, mode=mode)
    console.print(f"wrote robustness.json, robustness.csv, robustness_by_severity.csv and robustness.png to "
                  f"{out_dir} ({result.wall_seconds:.0f} s)")


@cli.group("data")
def data_group() -> None:
    """Dataset tools."""


@data_group.command("check")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value.")
@click.option("--split", default=None, help="Split to check (default: both train and val).")
@click.option("--limit", type=int, default=None, help="Check only the first N pairs of each split.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def data_check(config: Path, overrides: tuple[str, ...], split: str | None, limit: int | None,
               as_json: bool) -> None:
    """Scan the dataset of CONFIG: pairing, sizes, label values, class histogram, and hints."""
    from transeg.data.check import check_dataset, diagnose, format_report
    from transeg.data.datasets import build_dataset
    from transeg.engine.recipe import load_config

    cfg = load_config(config, list(overrides))
    splits = [split] if split else [s for s in (cfg.data.train_split, cfg.data.val_split) if s]
    failed = False
    for name in splits:
        dataset = build_dataset(cfg.data.dataset, cfg.data.root, name, **cfg.data.options)
        report = check_dataset(dataset, limit)
        if as_json:
            click.echo(json.dumps({"split": name, **report.to_dict()}))
        else:
            click.echo(format_report(report))
        for hint in diagnose(report):
            click.echo(f"  hint: {hint}")
        failed |= not report.ok
    if failed:
        sys.exit(1)


@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("demo-output"), show_default=True)
def demo(out_dir: Path) -> None:
    """Train segformer-b0 on generated scenes (CPU, a few minutes) and evaluate it on held-out ones."""
    from transeg.demo import run_demo

    metrics = run_demo(out_dir)
    click.echo(metrics.format_table())
    console.print(f"held-out mIoU {metrics.mIoU * 100:.2f}; overlays, metrics.json and the model in {out_dir}")


def main() -> None:
    cli(prog_name="transeg")
