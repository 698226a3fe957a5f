"""Which iterations of a training run log, evaluate and checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from transeg.engine.recipe import TrainConfig


@dataclass(frozen=True)
class Cadence:
    """Every N iterations, per kind; the schedule's last iteration always logs and, with a validation
    set, evaluates. (The trainer also checkpoints whenever its loop ends.)"""

    iterations: int
    log_interval: int
    eval_interval: int | None  # None: no validation set, no evaluation
    checkpoint_interval: int

    @classmethod
    def of(cls, cfg: TrainConfig, has_validation: bool) -> Cadence:
        train = cfg.train
        return cls(cfg.schedule.iterations, train.log_interval, train.eval_interval if has_validation else None,
                   train.checkpoint_interval)

    def logs_at(self, iteration: int) -> bool:
        return iteration % self.log_interval == 0 or iteration == self.iterations

    def evaluates_at(self, iteration: int) -> bool:
        return self.eval_interval is not None and (iteration % self.eval_interval == 0
                                                   or iteration == self.iterations)

    def checkpoints_at(self, iteration: int) -> bool:
        return iteration % self.checkpoint_interval == 0
