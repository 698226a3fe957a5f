"""The resumable state of a training run, and the one mapping between it and a checkpoint dict."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from transeg.errors import TransegError
from transeg.weights.native import CONFIG_METADATA_KEY

# Checkpoint keys that differ from the field names; every other field is stored under its own name.
_CHECKPOINT_KEYS = {"model_config": CONFIG_METADATA_KEY}


def _checkpoint_key(field_name: str) -> str:
    return _CHECKPOINT_KEYS.get(field_name, field_name)


@dataclass
class TrainState:
    """Everything a run needs to continue exactly, as one checkpoint holds it.

    ``model_config`` (JSON, under the key ``load_model`` reads, so that a checkpoint is also a model
    file) and ``train_config`` describe the run; resuming does not apply them.
    """

    model: dict[str, torch.Tensor]
    model_config: str
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    torch_rng: torch.Tensor
    iteration: int
    best_miou: float | None
    nonfinite_in_row: int
    nonfinite_total: int
    train_config: dict[str, Any]
    grad_scaler: dict[str, Any] | None = None  # torch.amp.GradScaler state of fp16 runs
    weight_average: dict[str, Any] | None = None  # WeightAverage state of runs with train.ema_decay

    def to_checkpoint(self) -> dict[str, Any]:
        """The dict ``save_checkpoint`` writes: one top-level key per field (None where an optional one is unset)."""
        return {_checkpoint_key(field.name): getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], source: str = "checkpoint") -> TrainState:
        """The state a checkpoint dict (as ``load_checkpoint`` returns it) holds; a missing entry is a
        TransegError naming it and ``source`` (fields with a default, added later, may be absent)."""
        fields = dataclasses.fields(cls)
        keys = {field.name: _checkpoint_key(field.name) for field in fields}
        required = {_checkpoint_key(f.name) for f in fields if f.default is dataclasses.MISSING}
        missing = sorted(key for key in required if key not in checkpoint)
        if missing:
            raise TransegError(f"{source}: not a complete transeg training checkpoint (missing {', '.join(missing)})")
        return cls(**{name: checkpoint[key] for name, key in keys.items() if key in checkpoint})
