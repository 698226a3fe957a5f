"""What a run resumes from: the newest checkpoint that reads, made under the same training config.

A checkpoint stores the run's ``train_config``. Resuming under another one would continue a
different run from the middle of this one (another model, classes, batch, schedule or data), so
it is refused, naming the keys that differ, unless the caller insists (``resume_anyway``). Keys
that change nothing the run learns (logging, checkpoint cadence, loader workers, evaluation) may
change freely. A newest checkpoint that does not read (truncated, not a checkpoint) gives way to
the one before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transeg.engine.checkpoint import list_checkpoints, load_checkpoint
from transeg.engine.train_state import TrainState
from transeg.errors import TransegError

# dotted config keys (or sections, ending in ".") that may differ between a run and its resumption
FREE_TO_CHANGE = (
    "output_dir", "eval.", "data.num_workers", "data.val_split", "data.test_scale", "data.size_divisor",
    "train.log_interval", "train.eval_interval", "train.checkpoint_interval", "train.keep_checkpoints",
    "train.time_limit_minutes", "train.max_nonfinite_steps", "train.on_bad_sample",
)


@dataclass
class Resumable:
    """The checkpoint chosen (``path``, its ``state``) and the newer ones passed over: their paths
    (``unusable``) and why, one ``"path: reason"`` each (``passed_over``)."""

    path: Path
    state: TrainState
    unusable: list[Path]
    passed_over: list[str]


def set_aside(path: Path) -> Path:
    """Rename an unusable checkpoint to ``NAME.unusable``: no longer a checkpoint, it can neither be
    resumed from nor outlive the good ones when old checkpoints are deleted. Returns the new path."""
    return path.rename(path.with_name(f"{path.name}.unusable"))


def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """A training config as ``{"section.key": value}`` (top-level values keep their key); values
    that are themselves dicts (``data.options``, ``train.aux_loss_weights``) stay whole."""
    flat: dict[str, Any] = {}
    for section, values in config.items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[section] = values
    return flat


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"key: saved -> current"`` for each dotted key whose value differs, sorted by key; both
    configs as ``TrainConfig.model_dump(mode="json")`` gives them. ``FREE_TO_CHANGE`` is left out,
    and so are keys only one side has (options added to transeg since the checkpoint was written)."""
    old, new = flatten(saved), flatten(current)
    keys = sorted(k for k in set(old) & set(new) if not k.startswith(FREE_TO_CHANGE))
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in keys if old[k] != new[k]]


def check_same_config(state: TrainState, current: dict[str, Any], source: Path) -> None:
    """A TransegError naming the keys when ``current`` differs from the config ``state`` was made under."""
    differences = config_differences(state.train_config, current)
    if differences:
        raise TransegError(
            f"{source} was made under another training config ({'; '.join(differences)}): resume with the "
            "config it was made with, or pass resume_anyway (transeg train --resume-anyway) to continue "
            "under the new one"
        )


def newest_usable_checkpoint(directory: Path) -> Resumable | None:
    """The newest checkpoint of ``directory`` that reads as a complete training state (None when
    there is none at all); a TransegError naming every file when none of them reads."""
    unusable: list[Path] = []
    passed_over: list[str] = []
    for path in reversed(list_checkpoints(directory)):
        try:
            state = TrainState.from_checkpoint(load_checkpoint(path), str(path))
        except TransegError as exc:
            unusable.append(path)
            passed_over.append(str(exc))
            continue
        return Resumable(path, state, unusable, passed_over)
    if passed_over:
        raise TransegError(f"{directory}: no checkpoint to resume from is usable: {' | '.join(passed_over)}")
    return None
