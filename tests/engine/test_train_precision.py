"""Mixed-precision training steps: fp16 with loss scaling (GradScaler) and bf16, run on the CPU here
and on a GPU by tests/test_cuda.py. Overflow skips and resuming the scale: tests/engine/test_fp16.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.recipe import parse_config
from transeg.engine.train import Trainer


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes"), num_train=4, num_val=1, size=(64, 64))


def precision_config(root: Path, out: Path, precision: str, iterations: int = 2, checkpoint_interval: int = 100):
    return parse_config({
        "data": {"dataset": "folder", "root": str(root), "crop_size": [64, 64], "scale": [64, 64],
                 "test_scale": None, "num_workers": 0},
        "optimizer": {"type": "sgd", "lr": 0.01, "weight_decay": 0.0},
        "schedule": {"iterations": iterations, "warmup_iters": 0},
        "train": {"batch_size": 2, "precision": precision, "eval_interval": 100,
                  "checkpoint_interval": checkpoint_interval, "keep_checkpoints": 5},
        "output_dir": str(out),
    })


def trained_step(root: Path, out: Path, precision: str) -> tuple[Trainer, dict]:
    """A trainer (on the GPU when there is one) after a ``fit`` of two steps, and its initial weights."""
    trainer = Trainer(precision_config(root, out, precision))
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit(show_progress=False)
    return trainer, before


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_steps_update_the_weights(scenes, tmp_path, precision):
    trainer, before = trained_step(scenes, tmp_path, precision)
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    after = trainer.model.state_dict()
    moved = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert moved and all(torch.isfinite(after[k]).all() for k in moved)
    assert trainer.iteration == 2 and trainer.nonfinite_total == 0  # scaler skips are not bad steps
    if precision == "fp16":  # the initial 2**16 scale, halved by each step whose gradients overflowed
        assert trainer.scaler.get_scale() in {2.0**16, 2.0**15, 2.0**14}
