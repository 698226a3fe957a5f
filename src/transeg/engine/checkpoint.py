"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a ``torch.save`` dict of tensors and plain values (readable with
``weights_only=True``): the model and optimizer states, the scheduler position, the RNG state, the
iteration and the run's bookkeeping, one key per field of :class:`transeg.engine.train_state.TrainState`.
The model's config travels with it as JSON, so a checkpoint is also a model file that
``load_model``, ``transeg eval`` and ``transeg predict`` accept.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Any

import torch

from transeg.errors import TransegError
from transeg.weights.files import torch_load_safely, write_atomic

CHECKPOINT_PATTERN = re.compile(r"iter_(\d+)\.pt")


def checkpoint_path(directory: Path, iteration: int) -> Path:
    return directory / f"iter_{iteration:07d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_PATTERN.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict[str, Any], directory: Path, iteration: int, keep: int) -> Path:
    """Write ``iter_NNNNNNN.pt`` atomically, then delete all but the newest ``keep``.

    A full disk is a TransegError; the previous checkpoints are untouched.
    """
    path = checkpoint_path(directory, iteration)
    try:
        write_atomic(path, lambda tmp: torch.save(state, tmp))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TransegError(f"{directory}: no space left to write checkpoint {path.name}; "
                               "the previous checkpoints are intact") from None
        raise
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (read without executing code)."""
    state = torch_load_safely(path)
    if not isinstance(state, dict) or "iteration" not in state or "model" not in state:
        raise TransegError(f"{path}: not a transeg training checkpoint")
    return state


def remove_partial_writes(directory: Path) -> None:
    """Delete temporary files left by a write that was killed before its rename."""
    if directory.is_dir():
        for leftover in directory.glob(".iter_*.pt.*"):
            leftover.unlink(missing_ok=True)


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None
