"""data.subset and data.subset_seed in the training config: the trainer trains on that fraction."""

from __future__ import annotations

import pytest

from transeg.data.subset import subset_indices
from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.recipe import parse_config
from transeg.engine.train import Trainer
from transeg.errors import TransegError


def config(root, out, **data):
    return parse_config({"model": {"name": "segformer-b0"},
                         "data": {"dataset": "folder", "root": str(root), "crop_size": [64, 64], "scale": [64, 64],
                                  "num_workers": 0, **data},
                         "schedule": {"iterations": 2, "warmup_iters": 1},
                         "output_dir": str(out)})


def test_trainer_takes_the_seeded_fraction(tmp_path):
    root = write_synthetic_dataset(tmp_path / "scenes", num_train=8, num_val=2, size=(64, 64))
    full = Trainer(config(root, tmp_path / "a"))
    part = Trainer(config(root, tmp_path / "b", subset=0.5, subset_seed=4))
    assert len(full.train_set) == 8 and len(part.train_set) == 4
    assert part.train_set.samples == [full.train_set.samples[i] for i in subset_indices(8, 0.5, 4)]
    assert len(part.val_set) == 2  # validation untouched


def test_subset_is_validated():
    with pytest.raises(TransegError, match=r"c.yaml: data.subset: Input should be less than or equal to 1 \(got 2\)"):
        parse_config({"data": {"dataset": "folder", "root": "/x", "subset": 2}}, "c.yaml")
