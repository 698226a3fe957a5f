"""``benchmarks/train_step.py`` steps every trainer in turn: one warm-up round, then ``steps`` timed."""

from __future__ import annotations

from benchmarks.train_step import step_seconds, trainer_for
from transeg.data.synthetic import write_synthetic_dataset


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
