"""``benchmarks/train_step.py`` steps every trainer in turn: one warm-up round, then ``steps`` timed."""

from __future__ import annotations

from unittest import mock

import torch
import torch.nn.functional as F

from benchmarks.train_step import flash_step, step_seconds, trainer_for
from transeg.data.synthetic import write_synthetic_dataset
from transeg.models.layers import attention as attention_module


def test_every_trainer_takes_the_warm_up_and_the_timed_steps(tmp_path) -> None:
    root = write_synthetic_dataset(tmp_path / "data", 4, 1, (64, 64))
    trainers = {m: trainer_for(m, root, tmp_path / m, (64, 64), 2, 3) for m in ("segformer-b0", "segmenter-t16-mask")}
    before = {m: [p.detach().clone() for p in t.model.parameters()] for m, t in trainers.items()}
    seconds = step_seconds(trainers, 2)
    assert seconds.keys() == trainers.keys() and all(s > 0 for s in seconds.values())
    for name, trainer in trainers.items():
        assert trainer.scheduler.last_epoch == 3  # warm-up + 2 timed steps
        assert any(not p.equal(q) for p, q in zip(trainer.model.parameters(), before[name], strict=True))


def test_a_trainer_takes_the_precision_it_is_given(tmp_path) -> None:
    root = write_synthetic_dataset(tmp_path / "data", 4, 1, (64, 64))
    assert trainer_for("segformer-b0", root, tmp_path / "a", (64, 64), 2, 3, "bf16").cfg.train.precision == "bf16"
    assert trainer_for("segformer-b0", root, tmp_path / "b", (64, 64), 2, 3).cfg.train.precision == "fp32"


def test_a_flash_step_keeps_bf16_attention_on_sdpa() -> None:
    q = torch.randn(1, 2, 8, 4).bfloat16()
    real, calls = F.scaled_dot_product_attention, []

    def step() -> torch.Tensor:
        with torch.autocast("cpu", torch.bfloat16):
            return attention_module.attention(q, q, q)

    with mock.patch.object(attention_module.F, "scaled_dot_product_attention",
                           side_effect=lambda *a, **k: calls.append(1) or real(*a, **k)):
        explicit, flash = step(), flash_step(step)
    assert calls == [1]
    assert torch.allclose(explicit.float(), flash.float(), atol=0.05)
