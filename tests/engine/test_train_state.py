"""The resumable state of a run: the checkpoint's top-level keys and their meaning, and exact restoring."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine import checkpoint as ckpt
from transeg.engine.recipe import TrainConfig, parse_config
from transeg.engine.train import Trainer
from transeg.engine.train_state import TrainState
from transeg.errors import TransegError

# The top-level keys of a training checkpoint as written since the first release: checkpoints
# already on disk hold these, so they must keep resuming.
CHECKPOINT_KEYS = {"model", "transeg_config", "optimizer", "scheduler", "torch_rng", "iteration", "best_miou",
                   "nonfinite_in_row", "nonfinite_total", "train_config"}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes"), num_train=4, num_val=2, size=(64, 64))


def two_step_config(root: Path, out: Path) -> TrainConfig:
    return parse_config({
        "data": {"dataset": "folder", "root": str(root), "crop_size": [64, 64], "scale": [64, 64],
                 "test_scale": None, "num_workers": 0},
        "optimizer": {"lr": 1e-3},
        "schedule": {"iterations": 2, "warmup_iters": 1},
        "train": {"batch_size": 2, "log_interval": 1, "eval_interval": 2, "checkpoint_interval": 1},
        "output_dir": str(out),
    })


def same(a: Any, b: Any) -> bool:
    """Equal values, tensors compared exactly (dtype included), containers element by element."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_checkpoint_keeps_its_top_level_keys_and_their_meaning(scenes, tmp_path):
    cfg = two_step_config(scenes, tmp_path / "run")
    trainer = Trainer(cfg)
    result = trainer.fit(show_progress=False)
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(trainer.ckpt_dir))
    assert set(saved) == CHECKPOINT_KEYS | {"grad_scaler", "weight_average"}  # added later, optional when resuming
    assert saved["grad_scaler"] is None and saved["weight_average"] is None  # fp32, no train.ema_decay
    assert same(saved["model"], trainer.model.state_dict())
    assert saved["transeg_config"] == trainer.model.config.to_json()
    assert same(saved["optimizer"], trainer.optimizer.state_dict())
    assert same(saved["scheduler"], trainer.scheduler.state_dict()) and saved["scheduler"]["last_epoch"] == 2
    assert same(saved["torch_rng"], torch.get_rng_state())
    assert saved["iteration"] == 2
    assert isinstance(saved["best_miou"], float) and saved["best_miou"] == result.best_miou
    assert saved["nonfinite_in_row"] == 0 and saved["nonfinite_total"] == 0
    assert saved["train_config"] == cfg.model_dump(mode="json")


def test_resuming_restores_every_field_of_a_checkpoint_in_the_existing_format(scenes, tmp_path):
    cfg = two_step_config(scenes, tmp_path / "run")
    trained = Trainer(cfg)
    trained.fit(show_progress=False)
    written = {  # as the trainer has always written it, with counters a clean run leaves at their start
        "model": trained.model.state_dict(), "transeg_config": trained.model.config.to_json(),
        "optimizer": trained.optimizer.state_dict(), "scheduler": trained.scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(), "iteration": trained.iteration, "best_miou": 0.25,
        "nonfinite_in_row": 1, "nonfinite_total": 2, "train_config": cfg.model_dump(mode="json"),
    }
    ckpt.save_checkpoint(written, trained.ckpt_dir, trained.iteration, keep=5)
    resumed = Trainer(cfg)
    before = copy.deepcopy(resumed.snapshot().to_checkpoint())  # the model's entries alias its weights
    assert resumed.resume()
    after = resumed.snapshot().to_checkpoint()
    assert set(after) == CHECKPOINT_KEYS | {"grad_scaler", "weight_average"}
    assert after["grad_scaler"] is None and after["weight_average"] is None
    for key in CHECKPOINT_KEYS:
        assert same(after[key], written[key]), key
    # each restored field held something else before: the comparison above could have failed
    descriptions = {"transeg_config", "train_config"}
    assert {key for key in CHECKPOINT_KEYS if not same(before[key], written[key])} == CHECKPOINT_KEYS - descriptions


def test_an_incomplete_checkpoint_is_named_not_a_key_error():
    expected = r"iter_9\.pt: not a complete transeg training checkpoint \(missing best_miou"
    with pytest.raises(TransegError, match=expected):
        TrainState.from_checkpoint({"model": {}, "iteration": 9}, "iter_9.pt")
