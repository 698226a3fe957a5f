"""Options that several commands share, spelled and documented once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from transeg.cli.types import CLASSES, DEVICE, OUTPUT_DIR, SIDE

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

BACKEND_OPTION = click.option(
    "--backend", type=click.Choice(["auto", "eager", "onnx", "compile"]), default="auto", show_default=True,
    help="auto: ONNX Runtime (exported once, cached) for fp32 on the CPU when the onnx extra is installed, "
         "else PyTorch eager; compile: eager through torch.compile (compiles once per input size).")
PRECISION_OPTION = click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32",
                                show_default=True, help="bf16: autocast (AVX512-BF16/AMX CPUs, GPUs); "
                                                        "fp16: autocast on a GPU.")
OVERRIDES_OPTION = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                                help="Override a config value.")
OUT_DIR_OPTION = click.option("--out", "out_dir", type=OUTPUT_DIR, required=True, help="Output folder.")
DEVICE_OPTION = click.option("--device", type=DEVICE, default="cpu", show_default=True,
                             help="cpu, cuda, cuda:N or mps (one this machine has); under torchrun each "
                                  "process takes the GPU of its local rank.")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def num_classes_option(applies_to: str = "zoo names only") -> Decorator:
    """``--num-classes``, whose help says which models it ``applies_to``."""
    return click.option("--num-classes", type=CLASSES, default=None, help=f"Classes of the head ({applies_to}).")


def size_option(help_text: str = "Input H W.") -> Decorator:
    """``--size H W``, 512 x 512 by default."""
    return pair_option("--size", help_text, default=(512, 512), show_default=True)


def pair_option(name: str, help_text: str, **kwargs: Any) -> Decorator:
    """An ``H W`` (or ``W H``) option: two sides of 1..MAX_SIDE pixels."""
    return click.option(name, type=SIDE, nargs=2, default=kwargs.pop("default", None), help=help_text, **kwargs)
