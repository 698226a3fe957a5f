"""The ``transeg`` command line: a thin layer over the library, one module per group of commands."""

from __future__ import annotations

import sys
import warnings
from typing import NoReturn

import click

from transeg.cli.lazy import LazyCommand, LazyGroup
from transeg.errors import TransegError, one_line

# every command, in the module of its group, with the first paragraph of its help
COMMANDS = {
    "list": LazyCommand("transeg.cli.models:list_command", "List the model names."),
    "info": LazyCommand("transeg.cli.models:info",
                        "Parameters (encoder, decoder, total) and GMACs of MODEL at one input size."),
    "convert": LazyCommand("transeg.cli.models:convert_command", "Convert a checkpoint (official, mmseg 0.x, "
                           "transformers, transeg) to transeg or transformers format."),
    "export": LazyCommand("transeg.cli.models:export_command",
                          "Export MODEL to ONNX with dynamic batch, height and width (or a fixed --size); "
                          "optionally with the preprocessing inside (--embed-preprocess) and quantised to INT8 "
                          "(--int8 --calib IMAGES)."),
    "train": LazyCommand("transeg.cli.run:train_command",
                         "Train the model described by CONFIG (YAML); run under torchrun for several processes."),
    "eval": LazyCommand("transeg.cli.run:eval_command", "Evaluate MODEL (any checkpoint) on a dataset: mIoU, "
                        "per-class IoU/Acc/Dice, confusion matrix."),
    "predict": LazyCommand("transeg.cli.run:predict", "Segment IMAGES (files, folders, globs or videos) with "
                           "MODEL; write label PNGs and overlays to --out."),
    "serve": LazyCommand("transeg.cli.serve:serve_command", "Serve MODEL over HTTP: POST /predict, GET /health, "
                         "GET /metadata, and a web page at /."),
    "data": LazyCommand("transeg.cli.run:data_group", "Dataset tools."),
    "demo": LazyCommand("transeg.cli.run:demo", "Train segformer-b0 on generated scenes (CPU, a few minutes) "
                        "and evaluate it on held-out ones."),
    "bench": LazyCommand("transeg.cli.analysis:bench", "Latency (median, min, max), images/s and peak memory "
                         "of MODEL's inference or training step."),
    "robustness": LazyCommand("transeg.cli.analysis:robustness_command", "mIoU of MODEL under common "
                              "corruptions x severities (SegFormer Table 5, Cityscapes-C style)."),
    "attention": LazyCommand("transeg.cli.analysis:attention_command", "Per-head attention maps (Segmenter "
                             "Fig. 1) of one patch of IMAGE in a ViT-based MODEL: head_XX.png, attention.png and "
                             "attention.json in --out."),
    "erf": LazyCommand("transeg.cli.analysis:erf_command", "Effective receptive fields (SegFormer Fig. 3) of "
                       "each encoder stage and of the head of MODEL, averaged over IMAGES (files, folders or "
                       "globs): erf.png, erf_<name>.png and erf.json in --out."),
}


def usage_error_line(exc: click.ClickException) -> str:
    """A usage error of click (a bad option, value or argument) as one ``error:`` line, where click
    would print the usage, a hint and the message over several."""
    hint = f" (see '{exc.ctx.command_path} --help')" if isinstance(exc, click.UsageError) and exc.ctx else ""
    return f"error: {one_line(Exception(exc.format_message()))}{hint}"


class _Group(LazyGroup):
    """Turns a TransegError or a usage error into one line on stderr and exit code 2 (a TransegError's
    traceback with --debug)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.ClickException as exc:
            _fail(usage_error_line(exc))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.ClickException as exc:
            _fail(usage_error_line(exc))
        except TransegError as exc:
            if ctx.params.get("debug"):
                raise
            _fail(f"error: {one_line(exc)}")


def _fail(line: str) -> NoReturn:
    click.echo(line, err=True)
    sys.exit(2)


@click.group(cls=_Group, lazy_commands=COMMANDS)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="transeg")
def cli(debug: bool) -> None:
    """Transformer semantic segmentation: SegFormer, Segmenter, SegDeformer."""
    if not debug:
        warnings.formatwarning = _one_line_warning


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """Warnings (a skipped sample, an unusable checkpoint) as one line ``warning: …``, without the source line."""
    return f"warning: {one_line(Exception(str(message)))}\n"


def main() -> None:
    cli(prog_name="transeg")
