"""train.ema_decay: the weight average follows its formula, is what the run evaluates and saves, and resumes exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import transeg
from tests.engine.test_train import scenes, tiny_config  # noqa: F401  (scenes is a fixture)
from transeg.engine.recipe import parse_config
from transeg.engine.train import Trainer, train
from transeg.engine.weight_average import WeightAverage, warmed_decay
from transeg.errors import TransegError


def test_update_is_the_moving_average_of_floats_and_copies_integer_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    average = WeightAverage(model, decay=0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(25):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(5, 3))  # moves the BatchNorm statistics and its step count
        average.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        for key, value in model.state_dict().items():
            expected[key] = d * expected[key] + (1 - d) * value if value.is_floating_point() else value.clone()
    for key, value in average.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-6)
    assert int(average.model.state_dict()["1.num_batches_tracked"]) == 25
    assert not any(p.requires_grad for p in average.model.parameters()) and not average.model.training


def test_decay_warms_up_to_its_value():
    assert warmed_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_decay(0.999, 90) == pytest.approx(91 / 100)
    assert warmed_decay(0.999, 100_000) == 0.999


def test_the_run_evaluates_and_saves_the_average(scenes, tmp_path):  # noqa: F811
    cfg = tiny_config(scenes, tmp_path / "run", train={"ema_decay": 0.5})
    trainer = Trainer(cfg)
    shadow = WeightAverage(trainer.model, 0.5)
    step = trainer._step

    def step_then_follow(*args):
        out = step(*args)
        shadow.update(trainer.model)
        return out

    trainer._step = step_then_follow
    trainer.fit(show_progress=False)
    saved = transeg.load_model(tmp_path / "run" / "model.safetensors").state_dict()
    trained = trainer.model.state_dict()
    for key, value in shadow.model.state_dict().items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
    assert any(not torch.equal(saved[k], trained[k]) for k in saved), "the saved model is the trained one"
    best = transeg.load_model(tmp_path / "run" / "best.safetensors").state_dict()  # evaluated at iteration 6
    assert all(torch.equal(best[k], saved[k]) for k in saved)


def test_resume_continues_the_average_exactly(scenes, tmp_path):  # noqa: F811
    ema = {"ema_decay": 0.7}
    train(tiny_config(scenes, tmp_path / "a", train=ema), show_progress=False)
    train(tiny_config(scenes, tmp_path / "b", train=ema), show_progress=False)
    (tmp_path / "b" / "checkpoints" / "iter_0000006.pt").unlink()  # as if killed after iteration 3
    resumed = Trainer(tiny_config(scenes, tmp_path / "b", train=ema))
    assert resumed.resume() and resumed.average.updates == 3
    resumed.fit(show_progress=False)
    a = transeg.load_model(tmp_path / "a" / "model.safetensors").state_dict()
    b = transeg.load_model(tmp_path / "b" / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed average differs from the uninterrupted one"


def test_a_run_without_average_resumed_with_one_starts_it_from_the_weights(scenes, tmp_path):  # noqa: F811
    train(tiny_config(scenes, tmp_path / "r", schedule={"iterations": 3, "warmup_iters": 1}), show_progress=False)
    resumed = Trainer(tiny_config(scenes, tmp_path / "r", train={"ema_decay": 0.9}))
    assert resumed.resume(resume_anyway=True)
    restored = copy.deepcopy(resumed.model.state_dict())
    assert resumed.average.updates == 0
    assert all(torch.equal(v, restored[k]) for k, v in resumed.result_model.state_dict().items())


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1])
def test_a_decay_outside_0_1_is_refused(decay, tmp_path):
    with pytest.raises(TransegError, match="train.ema_decay"):
        parse_config({"data": {"dataset": "folder", "root": str(tmp_path)}, "train": {"ema_decay": decay}})
