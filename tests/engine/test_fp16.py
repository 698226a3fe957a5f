"""``train.precision: fp16``: autocast with a gradient scaler whose state resumes exactly, and a
non-finite-step guard that tells a scaler's overflow skip from a bad step."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine import checkpoint as ckpt
from transeg.engine.recipe import parse_config
from transeg.engine.train import Trainer
from transeg.errors import TransegError


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes"), num_train=6, num_val=2, size=(64, 64))


def fp16_config(root: Path, out: Path, iterations: int = 4, **train):
    return parse_config({
        "data": {"dataset": "folder", "root": str(root), "crop_size": [64, 64], "scale": [64, 64],
                 "test_scale": None, "num_workers": 0},
        "optimizer": {"lr": 1e-3},
        "schedule": {"iterations": iterations, "warmup_iters": 1},
        "train": {"batch_size": 2, "log_interval": 1, "eval_interval": 100, "checkpoint_interval": 2,
                  "keep_checkpoints": 5, "precision": "fp16", **train},
        "loss": [{"type": "cross_entropy"}, {"type": "dice", "weight": 0.5}],
        "output_dir": str(out),
    })


def _set_scale(trainer: Trainer, scale: float) -> None:
    trainer.scaler.load_state_dict({**trainer.scaler.state_dict(), "scale": scale})


def _losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["iter"]: r["loss"] for r in records if "loss" in r}  # later records (the resumed run) win


def test_resume_restores_the_scaler_and_continues_identically(scenes, tmp_path):
    whole = Trainer(fp16_config(scenes, tmp_path / "a"))
    _set_scale(whole, 1024.0)  # a scale the default would never reach in 4 steps
    whole.fit(show_progress=False)
    first = Trainer(fp16_config(scenes, tmp_path / "b"))
    _set_scale(first, 1024.0)
    first.fit(show_progress=False)
    (tmp_path / "b" / "checkpoints" / "iter_0000004.pt").unlink()  # as if killed after iteration 2
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "b" / "checkpoints"))
    assert saved["grad_scaler"]["scale"] in (1024.0, 512.0, 256.0)  # the scaler's state (halved by any overflow)

    resumed = Trainer(fp16_config(scenes, tmp_path / "b"))
    assert resumed.scaler.get_scale() == 65536.0  # a fresh scaler ...
    assert resumed.resume() and resumed.iteration == 2
    assert resumed.scaler.state_dict() == saved["grad_scaler"]  # ... restored
    resumed.fit(show_progress=False)
    assert resumed.scaler.state_dict() == whole.scaler.state_dict()
    assert {i: _losses(tmp_path / "b")[i] for i in (3, 4)} == {i: _losses(tmp_path / "a")[i] for i in (3, 4)}
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed fp16 run differs from the uninterrupted one"


def test_scaler_overflow_skips_are_not_bad_steps(scenes, tmp_path):
    """A scale of 2^100 overflows every fp16 gradient: the scaler skips the step and halves the scale;
    with max_nonfinite_steps 1 the run still finishes, with no step counted as non-finite."""
    trainer = Trainer(fp16_config(scenes, tmp_path / "o", iterations=3, max_nonfinite_steps=1))
    _set_scale(trainer, 2.0 ** 100)
    before = trainer.model.decoder.fuse.weight.clone()
    trainer.fit(show_progress=False)
    assert trainer.nonfinite_total == 0
    assert trainer.scaler.get_scale() == 2.0 ** 97  # three skips, each halving the scale
    assert torch.equal(trainer.model.decoder.fuse.weight, before), "an overflowing step was applied"


def test_non_finite_loss_still_stops_an_fp16_run(scenes, tmp_path):
    trainer = Trainer(fp16_config(scenes, tmp_path / "n", iterations=6, max_nonfinite_steps=2))
    with torch.no_grad():
        trainer.model.decoder.classifier.bias.fill_(math.nan)
    with pytest.raises(TransegError, match="2 steps in a row had a non-finite loss"):
        trainer.fit(show_progress=False)
    assert trainer.nonfinite_total == 2
