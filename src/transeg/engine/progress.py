"""What a training run reports at each step: the progress bar, and the step records of its log."""

from __future__ import annotations

import time

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from transeg.engine.training_log import TrainingLog


class TrainingProgress:
    """Reports each step on the progress bar (when shown) and, when asked, as a record of the
    training log. Images/s counts the steps since the previous record. A context manager: the bar
    is live inside it."""

    def __init__(self, log: TrainingLog, batch_size: int, iterations: int, done: int, lr: float,
                 show: bool) -> None:
        self.log = log
        self.batch_size = batch_size
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[ips]:.1f} img/s"),
                   TimeRemainingColumn())
        self._bar = Progress(*columns, disable=not show)
        self._task = self._bar.add_task("train", total=iterations, completed=done, loss=float("nan"), lr=lr, ips=0.0)
        self._window_start, self._window_steps = time.monotonic(), 0

    def __enter__(self) -> TrainingProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.stop()

    def step(self, iteration: int, loss: torch.Tensor, parts: dict[str, torch.Tensor], lr: float,
             skipped_steps: int, record: bool) -> None:
        """Advance the bar by the step that reached ``iteration``; with ``record``, also log it
        (``parts``: the loss terms) and start a new throughput window."""
        self._window_steps += 1
        elapsed = time.monotonic() - self._window_start
        ips = self._window_steps * self.batch_size / max(elapsed, 1e-9)
        self._bar.update(self._task, advance=1, loss=float(loss), lr=lr, ips=ips)
        if record:
            self.log.write({"iter": iteration, "loss": float(loss), "lr": lr, "imgs_per_s": ips,
                            **{k: float(v) for k, v in parts.items()}, "skipped_steps": skipped_steps})
            self._window_start, self._window_steps = time.monotonic(), 0
