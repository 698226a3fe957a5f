"""Mixed-precision training steps: fp16 with loss scaling (GradScaler) and bf16, run on the CPU here
and on a GPU by tests/test_cuda.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import transeg
from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.recipe import parse_config
from transeg.engine.train import Trainer, train


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
    assert trainer.iteration == 2 and trainer.nonfinite_total < 2  # at least one step was applied
    if precision == "fp16":  # each skipped (overflowing) step halved the initial 2**16 scale
        assert trainer.scaler.get_scale() == 2.0**16 / 2**trainer.nonfinite_total
    else:
        assert trainer.nonfinite_total == 0


def test_fp16_overflow_skips_the_step_and_lowers_the_scale(scenes, tmp_path):
    trainer = Trainer(precision_config(scenes, tmp_path, "fp16", iterations=1))
    # fp16 gradients overflow at once under this scale
    trainer.scaler = torch.amp.GradScaler(trainer.info.device.type, init_scale=2.0**120)
    before = trainer.model.decoder.fuse.weight.detach().clone()
    trainer.fit(show_progress=False)
    assert trainer.scaler.get_scale() == 2.0**119
    assert trainer.nonfinite_total == 1 and torch.equal(trainer.model.decoder.fuse.weight, before)


def test_fp16_resume_reaches_the_same_weights_and_scale(scenes, tmp_path):
    """The loss scale is checkpointed: a run resumed after step 2 of 4 ends as the uninterrupted one."""
    def config(name):
        return precision_config(scenes, tmp_path / name, "fp16", iterations=4, checkpoint_interval=2)

    uninterrupted = Trainer(config("a"))
    uninterrupted.fit(show_progress=False)
    train(config("b"), show_progress=False)
    (tmp_path / "b" / "checkpoints" / "iter_0000004.pt").unlink()  # as if killed after iteration 2
    resumed = Trainer(config("b"))
    assert resumed.resume() and resumed.iteration == 2
    assert resumed.scaler.get_scale() == 2.0**16 / 2**resumed.nonfinite_total  # the scale of step 2, not a fresh one
    resumed.fit(show_progress=False)
    assert resumed.scaler.get_scale() == uninterrupted.scaler.get_scale()
    a = transeg.load_model(tmp_path / "a" / "model.safetensors").state_dict()
    b = transeg.load_model(tmp_path / "b" / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed fp16 run differs from the uninterrupted one"
