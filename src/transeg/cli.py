"""The ``transeg`` command line: a thin layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console

from transeg.errors import TransegError

console = Console(stderr=True)


class _Group(click.Group):
    """Turns a TransegError into one line on stderr and exit code 2 (a traceback with --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TransegError as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="transeg")
def cli(debug: bool) -> None:
    """Transformer semantic segmentation: SegFormer, Segmenter, SegDeformer."""


def resolve_model(spec: str, num_classes: int | None = None):
    """A model from a zoo name (random weights) or from any supported checkpoint path."""
    from transeg.models.zoo import ZOO, create_model
    from transeg.weights.io import load_model

    if spec in ZOO:
        return create_model(spec, num_classes=num_classes)
    if not Path(spec).exists() and "/" not in spec and "." not in spec:
        raise TransegError(f"{spec!r} is neither a model name (see `transeg list`) nor an existing path")
    model = load_model(spec)
    if num_classes is not None and num_classes != model.num_classes:
        raise TransegError(f"{spec}: the checkpoint has {model.num_classes} classes, not {num_classes}")
    return model


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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(model: str, num_classes: int | None, size: tuple[int, int], as_json: bool) -> None:
    """Parameters (encoder, decoder, total) and GMACs of MODEL at one input size."""
    from transeg.analysis.complexity import model_complexity

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
    click.echo(f"  GMACs    {stats['gmacs']:.2f}  (one multiply-add counted once, attention included)")


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
def predict(model: str, images: tuple[str, ...], out_dir: Path, num_classes: int | None, mode: str,
            crop: tuple[int, int] | None, stride: tuple[int, int] | None, scales: str, no_flip: bool,
            size_divisor: int | None, batch_size: int, alpha: float) -> None:
    """Segment IMAGES (files, folders or globs) with MODEL; write label PNGs and overlays to --out."""
    from transeg.engine.predict import predict_files

    try:
        scale_values = tuple(float(s) for s in scales.split(","))
    except ValueError:
        raise TransegError(f"--scales: expected comma-separated numbers, got {scales!r}") from None
    segmentor = resolve_model(model, num_classes)
    if model == segmentor.config.name:
        console.print(f"[yellow]note:[/] {model} has random weights; pass a checkpoint for real predictions")
    written = predict_files(
        segmentor, images, out_dir, mode=mode, crop=crop, stride=stride, scales=scale_values,
        flip=not no_flip, size_divisor=size_divisor, batch_size=batch_size, alpha=alpha,
    )
    console.print(f"wrote {len(written)} label maps and overlays to {out_dir}")


@cli.command("convert")
@click.argument("source")
@click.option("--to", "target", type=click.Choice(["transeg", "hf"]), default="transeg", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output .safetensors file (transeg) or directory (hf).")
def convert_command(source: str, target: str, out: Path) -> None:
    """Convert a checkpoint (official, mmseg 0.x, transformers, transeg) to transeg or transformers format."""
    from transeg.weights.io import load_model, save_hf_pretrained, save_model

    model = load_model(source)
    written = save_model(model, out) if target == "transeg" else save_hf_pretrained(model, out)
    console.print(f"wrote {written} ({model.config.name}, {model.num_classes} classes)")


def main() -> None:
    cli(prog_name="transeg")
