"""The training log: one JSON line per record (and TensorBoard scalars when it is installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class TrainingLog:
    """JSON-lines log (and TensorBoard when installed), written by the main process."""

    def __init__(self, directory: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = directory / "log.jsonl"
        self.tensorboard = None
        if enabled:
            try:  # an optional dependency, imported only where a log is written
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(directory / "tensorboard"))
            except ImportError:
                pass

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "iter":
                    self.tensorboard.add_scalar(key, value, record["iter"])
