"""The types of the command-line options: every number, size, device and output location is checked
as it is parsed, before any work starts, and a bad value is one line naming the option and the value."""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click
import torch

from transeg.errors import TransegError

MAX_SIDE = 8192  # the largest input side any command accepts (the ONNX export's dynamic range)
MIN_FREE_BYTES = 16 * 2**20  # an output location with less room than this is refused up front
MAX_SEED = 2**32 - 1  # numpy's seed range

MAX_CLASSES = 65536  # a 16-bit label map holds them
MAX_BATCH = 1024
MAX_WIDTH = 4096  # a decoder width
MAX_COUNT = 100_000  # repeats, warm-up runs, threads

POSITIVE = click.IntRange(min=1)
SEED = click.IntRange(0, MAX_SEED)
CLASSES = click.IntRange(1, MAX_CLASSES)
BATCH = click.IntRange(1, MAX_BATCH)
WIDTH = click.IntRange(1, MAX_WIDTH)
COUNT = click.IntRange(1, MAX_COUNT)
COUNT_OR_ZERO = click.IntRange(0, MAX_COUNT)
DIVISOR = click.IntRange(1, 1024)  # a size divisor (the recipes use 32)


class FiniteFloatRange(click.FloatRange):
    """A float in a range; nan, which compares false with any bound, is refused too."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"expected a finite number, got {value!r}", param, ctx)
        return number


UNIT_INTERVAL = FiniteFloatRange(0.0, 1.0)


class SizeType(click.ParamType):
    """One side of an H W pair: an integer in 1..``MAX_SIDE``; ``nargs=2`` makes it a pair."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            side = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            self.fail(f"expected a whole number of pixels, got {value!r}", param, ctx)
        if not 1 <= side <= MAX_SIDE:
            self.fail(f"each side must be in 1..{MAX_SIDE} pixels, got {side}", param, ctx)
        return side


SIDE = SizeType()


class ScalesType(click.ParamType):
    """Comma-separated positive, finite scale factors, at most 8 each."""

    name = "scales"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            scales = tuple(float(s) for s in str(value).split(","))
        except ValueError:
            self.fail(f"expected comma-separated numbers, got {value!r}", param, ctx)
        if not all(math.isfinite(s) and 0 < s <= 8 for s in scales):
            self.fail(f"each scale must be in (0, 8], got {value!r}", param, ctx)
        return scales


DEVICE_PATTERN = re.compile(r"(cpu|mps|cuda)(?::(\d+))?")


def parse_device(text: str) -> str:
    """``text`` as a device this machine has: cpu, cuda, cuda:N or mps; otherwise a TransegError."""
    match = DEVICE_PATTERN.fullmatch(text.strip())
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise TransegError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda" and not torch.cuda.is_available():
        raise TransegError(f"{text!r}: no CUDA device is available on this machine")
    if kind == "cuda" and index is not None and int(index) >= torch.cuda.device_count():
        raise TransegError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise TransegError(f"{text!r}: MPS is not available on this machine")
    return match.group(0)


class DeviceType(click.ParamType):
    """``--device``: one this machine has."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return parse_device(str(value))
        except TransegError as exc:
            self.fail(str(exc), param, ctx)


def _nearest_existing(path: Path) -> Path:
    """``path`` or the closest of its ancestors that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _room_and_permission(path: Path, existing: Path) -> None:
    """``existing`` (``path`` or its nearest existing ancestor) is a writable folder, or a file in one,
    on a disk with room."""
    folder = existing if existing.is_dir() else existing.parent
    if not existing.is_dir() and existing != path.absolute():
        raise TransegError(f"{path}: {existing} is a file, so nothing can be written below it")
    try:  # a file made and removed: permissions, read-only mounts and special folders alike
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise TransegError(f"{path}: cannot write in {folder} ({exc.strerror})") from None
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise TransegError(f"{path}: only {free // 2**20} MiB free on the disk holding {folder}")


def check_output(text: str, kind: str) -> Path:
    """``text`` as an output folder (``kind="dir"``) or file (``kind="file"``) that can be written,
    checked before any work starts; otherwise a TransegError naming it."""
    if text.strip() == "" or "\x00" in text:
        raise TransegError(f"{text!r}: not a usable path")
    path = Path(text)
    try:
        return check_output_dir(path) if kind == "dir" else check_output_file(path)
    except OSError as exc:  # a name too long, a loop of links, …
        raise TransegError(f"{text}: not a usable path ({exc.strerror})") from None


def check_output_dir(path: Path) -> Path:
    """``path`` can be (or become) a folder the command writes into; otherwise a TransegError."""
    if path.exists() and not path.is_dir():
        raise TransegError(f"{path}: is a file, not a folder; name a folder for the outputs")
    _room_and_permission(path, _nearest_existing(path))
    return path


def check_output_file(path: Path) -> Path:
    """``path`` can be written as a file (created or replaced); otherwise a TransegError."""
    if path.name in ("", ".", ".."):
        raise TransegError(f"{str(path)!r}: not a file name")
    if path.is_dir():
        raise TransegError(f"{path}: is a folder; name the output file")
    existing = _nearest_existing(path)
    if existing == path.absolute() and not os.access(path, os.W_OK):
        raise TransegError(f"{path}: the file exists and is not writable")
    _room_and_permission(path, existing)
    return path


def refuse_replacing(source: Path, destination: Path, kind: str) -> None:
    """A TransegError if writing the output ``destination`` (a ``kind`` "file" or "dir") could replace
    the input ``source``: the same file, or a folder that holds the source or is the source."""
    source, destination = source.resolve(), destination.resolve()
    holders = {source, source.parent} if kind == "dir" else {source}
    if destination in holders:
        raise TransegError(f"{destination}: writing there could replace the input {source}; choose another --out")


class OutputType(click.ParamType):
    """An output folder (``kind="dir"``) or file (``kind="file"``), checked before any work starts."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = "folder" if kind == "dir" else "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        try:
            return check_output(str(value), self.kind)
        except TransegError as exc:
            self.fail(str(exc), param, ctx)


DEVICE = DeviceType()
SCALES = ScalesType()
OUTPUT_DIR = OutputType("dir")
OUTPUT_FILE = OutputType("file")
