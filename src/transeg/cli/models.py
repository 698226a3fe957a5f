"""Commands about models themselves: list, info, convert, export."""

from __future__ import annotations

import json
from pathlib import Path

import click

from transeg.analysis.complexity import model_complexity
from transeg.api import load_model
from transeg.cli.console import console
from transeg.cli.options import DEVICE_OPTION, JSON_OPTION, num_classes_option, pair_option, size_option
from transeg.cli.types import OUTPUT_FILE, WIDTH, check_output, refuse_replacing
from transeg.errors import TransegError
from transeg.inference.export import MAX_OPSET, MIN_OPSET, export_onnx
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
@DEVICE_OPTION
def export_command(model: str, fmt: str, out: Path, opset: int, num_classes: int | None,
                   size: tuple[int, int] | None, device: str) -> None:
    """Export MODEL to ONNX with dynamic batch, height and width (or a fixed --size)."""
    segmentor = load_model(model, num_classes).to(device)
    with console.status(f"exporting {segmentor.config.name} to ONNX"):
        path = export_onnx(segmentor, out, opset=opset, size=size)
    shape = "(B, 3, H, W)" if size is None else f"(B, 3, {size[0]}, {size[1]})"
    console.print(f"wrote {path} (input 'image' {shape} float32, normalised; output 'logits')")


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
