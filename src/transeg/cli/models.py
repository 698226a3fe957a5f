"""Commands about models themselves: list, info, convert, export."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from transeg.analysis.complexity import model_complexity
from transeg.api import load_model
from transeg.cli.console import console
from transeg.cli.options import DEVICE_OPTION, JSON_OPTION, num_classes_option, pair_option, size_option
from transeg.cli.types import DIVISOR, OUTPUT_FILE, WIDTH, FiniteFloatRange, check_output, refuse_replacing
from transeg.data.datasets import SegmentationDataset
from transeg.engine.evaluate import require_same_classes
from transeg.engine.quant_eval import compare_int8, onnx_labeler
from transeg.engine.recipe import TrainConfig, build_dataset_from_config, load_config
from transeg.errors import TransegError
from transeg.inference.backends import default_int8_runtime
from transeg.inference.embed import OUTPUTS, export_embedded
from transeg.inference.export import MAX_OPSET, MIN_OPSET, export_onnx
from transeg.inference.predict import expand_images
from transeg.inference.quantize import quantize_int8
from transeg.models.factory import build_model
from transeg.models.zoo import ZOO, list_models, model_config, with_decoder_width
from transeg.weights.load import load_model as load_model_file
from transeg.weights.native import save_model
from transeg.weights.segformer import save_hf_pretrained


@click.command("list")
def list_command() -> None:
    """List the model names."""
    for name in list_models():
        click.echo(name)


@click.command()
@click.argument("model")
@num_classes_option("zoo names; default 150")
@size_option()
@click.option("--decoder-width", type=WIDTH, default=None, help="Replace the decoder width C (zoo names).")
@JSON_OPTION
def info(model: str, num_classes: int | None, size: tuple[int, int], decoder_width: int | None,
         as_json: bool) -> None:
    """Parameters (encoder, decoder, total) and GMACs of MODEL at one input size."""
    if decoder_width is not None:
        if model not in ZOO:
            raise TransegError("--decoder-width applies to model names, not checkpoints")
        segmentor = build_model(with_decoder_width(model_config(model, num_classes), decoder_width))
    else:
        segmentor = load_model(model, num_classes)
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


@click.command("export")
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", type=OUTPUT_FILE, required=True, help="Output .onnx file.")
@click.option("--opset", type=click.IntRange(MIN_OPSET, MAX_OPSET), default=18, show_default=True)
@num_classes_option()
@pair_option("--size", "Fix the input H W (default: dynamic; Swin needs it).")
@click.option("--embed-preprocess", is_flag=True,
              help="Self-contained graph: uint8 (B, H, W, 3) RGB in, --output at the input's size out.")
@click.option("--output", type=click.Choice(OUTPUTS), default=None,
              help="With --embed-preprocess: labels (default), probs or logits.")
@click.option("--size-divisor", type=DIVISOR, default=None,
              help="With --embed-preprocess: resize to multiples of it inside the graph, as predict does.")
@click.option("--int8", is_flag=True, help="Static INT8 quantisation (QDQ, per-channel weights).")
@click.option("--calib", multiple=True, metavar="IMAGES",
              help="With --int8: calibration images (files, folders or globs; repeatable).")
@click.option("--int8-runtime", type=click.Choice(["openvino", "onnxruntime"]), default=None,
              help="With --int8: the runtime to lay the graph out for (default: openvino where installed, "
                   "onnxruntime for --embed-preprocess or without openvino).")
@click.option("--eval", "eval_config", type=click.Path(path_type=Path), default=None,
              help="With --int8: compare INT8 with fp32 on this training config's val split.")
@click.option("--max-drop", type=FiniteFloatRange(0.0, 100.0), default=1.0, show_default=True,
              help="With --eval: the most mIoU points INT8 may lose; beyond, nothing is written.")
@DEVICE_OPTION
def export_command(model: str, fmt: str, out: Path, opset: int, num_classes: int | None,
                   size: tuple[int, int] | None, embed_preprocess: bool, output: str | None,
                   size_divisor: int | None, int8: bool, calib: tuple[str, ...], int8_runtime: str | None,
                   eval_config: Path | None, max_drop: float, device: str) -> None:
    """Export MODEL to ONNX with dynamic batch, height and width (or a fixed --size); optionally with the
    preprocessing inside (--embed-preprocess) and quantised to INT8 (--int8 --calib IMAGES)."""
    if not embed_preprocess and (output or size_divisor):
        raise TransegError("--output and --size-divisor apply with --embed-preprocess")
    if embed_preprocess and size is not None:
        raise TransegError("--embed-preprocess exports dynamic sizes; drop --size")
    if not int8 and (calib or eval_config or int8_runtime):
        raise TransegError("--calib, --int8-runtime and --eval apply with --int8")
    if int8 and not calib:
        raise TransegError("--int8 needs calibration images: --calib IMAGES")
    calib_paths = expand_images(calib)
    cfg = load_config(eval_config) if eval_config is not None else None
    dataset = _eval_dataset(cfg, eval_config) if eval_config is not None else None
    segmentor = load_model(model, num_classes).to(device)
    if dataset is not None:
        require_same_classes(segmentor, dataset, model)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx" if int8 else out
        with console.status(f"exporting {segmentor.config.name} to ONNX"):
            if embed_preprocess:
                export_embedded(segmentor, fp32, output or "labels", size_divisor, opset)
            else:
                export_onnx(segmentor, fp32, opset=opset, size=size)
        if int8:
            quantized = Path(tmp) / "int8.onnx"
            with console.status(f"quantising to INT8, calibrated on {len(calib_paths)} images"):
                runtime = int8_runtime or ("onnxruntime" if embed_preprocess else default_int8_runtime())
                quantize_int8(fp32, quantized, calib_paths, runtime=runtime)
            if dataset is not None:
                _check_drop(fp32, quantized, dataset, cfg, eval_config, max_drop)
            os.replace(quantized, out)
    if embed_preprocess:
        shape = f"input 'image' (B, H, W, 3) uint8 RGB; output '{output or 'labels'}' at the input's size"
    else:
        shape = "input 'image' " + ("(B, 3, H, W)" if size is None else f"(B, 3, {size[0]}, {size[1]})") + \
            " float32, normalised; output 'logits'"
    console.print(f"wrote {out} ({'INT8' if int8 else 'fp32'}; {shape})")


def _eval_dataset(cfg: TrainConfig, config: Path) -> SegmentationDataset:
    if cfg.data.val_split is None:
        raise TransegError(f"{config}: data.val_split is null; --eval needs a validation split")
    return build_dataset_from_config(cfg.data, cfg.data.val_split)


def _check_drop(fp32: Path, int8: Path, dataset: SegmentationDataset, cfg: TrainConfig, config: Path,
                max_drop: float) -> None:
    """Print INT8's agreement with fp32 and both mIoUs on ``dataset``; refuse a drop over ``max_drop``."""
    report = compare_int8(onnx_labeler(fp32, cfg.data.size_divisor), onnx_labeler(int8, cfg.data.size_divisor),
                          dataset, cfg.data.test_scale)
    console.print(f"INT8 vs fp32 on {report.images} images of {config}: label agreement "
                  f"{report.agreement * 100:.2f}%, mIoU {report.miou_fp32:.2f} -> {report.miou_int8:.2f} "
                  f"({-report.drop:+.2f} points)")
    if report.drop > max_drop:
        raise TransegError(f"INT8 loses {report.drop:.2f} mIoU points on {config}, more than --max-drop "
                           f"{max_drop:g}; nothing written")


@click.command("convert")
@click.argument("source")
@click.option("--to", "target", type=click.Choice(["transeg", "hf"]), default="transeg", show_default=True)
@click.option("--out", required=True, help="Output .safetensors file (transeg) or directory (hf).")
def convert_command(source: str, target: str, out: str) -> None:
    """Convert a checkpoint (official, mmseg 0.x, transformers, transeg) to transeg or transformers format."""
    kind = "file" if target == "transeg" else "dir"
    destination = check_output(out, kind)
    refuse_replacing(Path(source), destination, kind)
    model = load_model_file(source)
    written = save_model(model, destination) if target == "transeg" else save_hf_pretrained(model, destination)
    console.print(f"wrote {written} ({model.config.name}, {model.num_classes} classes)")
