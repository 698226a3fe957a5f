"""Training and evaluation check label maps as `transeg data check` does, and refuse to train on nothing."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import transeg
from tests.data.test_label_validation import SIZE, write_folder
from transeg.data.datasets import folder
from transeg.engine.evaluate import evaluate
from transeg.engine.recipe import EvalSection, parse_config
from transeg.engine.train import train
from transeg.errors import TransegError


def _labels(value: int, mode: str = "L") -> tuple[np.ndarray, str]:
    values = np.full(SIZE, 255, dtype=np.int64)
    values[1:5, 2:7] = value
    return values, mode


def _config(root: Path, out: Path, on_bad_sample: str = "error"):
    return parse_config({
        "model": {"name": "segformer-b0"},
        "data": {"dataset": "folder", "root": str(root), "crop_size": [32, 32], "scale": [32, 32],
                 "test_scale": None, "num_workers": 0, "val_split": None},
        "schedule": {"iterations": 2, "warmup_iters": 0},
        "train": {"batch_size": 2, "log_interval": 1, "checkpoint_interval": 2, "on_bad_sample": on_bad_sample},
        "output_dir": str(out),
    })


GOOD = {"good0": _labels(0), "good1": _labels(2, "P"), "good2": _labels(1, "I;16")}


def test_a_16_bit_value_over_255_stops_training_with_the_file_named(tmp_path):
    root = write_folder(tmp_path / "data", {**GOOD, "wide": _labels(300, "I;16")})
    with pytest.raises(TransegError, match=r"wide\.png: label value\(s\) \[300\]"):
        train(_config(root, tmp_path / "run"), show_progress=False)


def test_a_bad_label_map_is_skipped_under_skip(tmp_path):
    root = write_folder(tmp_path / "data", {**GOOD, "wide": _labels(300, "I;16"), "pal": _labels(9, "P")})
    with pytest.warns(UserWarning, match=r"skipping bad sample: .*(wide|pal)\.png"):
        result = train(_config(root, tmp_path / "run", "skip"), show_progress=False)
    assert result.iteration == 2


@pytest.mark.parametrize("maps", [
    {"a": _labels(255), "b": _labels(255, "I;16"), "c": _labels(255, "P")},  # all ignored
    {"a": (np.full(SIZE, 255), "L"), "b": (np.full(SIZE, 255), "L")},
])
def test_a_run_where_every_pixel_is_ignored_stops(tmp_path, maps):
    root = write_folder(tmp_path / "data", maps)
    with pytest.raises(TransegError, match="no pixel of its .* label maps is labelled"):
        train(_config(root, tmp_path / "run"), show_progress=False)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_values_all_out_of_range_stop_or_leave_nothing_under_skip(tmp_path):
    root = write_folder(tmp_path / "data", {"a": _labels(3), "b": _labels(7, "P")})
    with pytest.raises(TransegError, match=r"a\.png: label value\(s\) \[3\]"):
        train(_config(root, tmp_path / "run"), show_progress=False)
    with warnings.catch_warnings(), pytest.raises(TransegError, match="no sample could be read"):
        warnings.simplefilter("ignore")
        train(_config(root, tmp_path / "skip", "skip"), show_progress=False)


def test_evaluation_checks_labels_too(tmp_path):
    root = write_folder(tmp_path, {"good": _labels(1), "wide": _labels(1000, "I;16")}, split="val")
    dataset = folder(root, "val")
    torch.manual_seed(0)
    model = transeg.create_model("segformer-b0", num_classes=3)
    with pytest.raises(TransegError, match=r"wide\.png: label value\(s\) \[1000\]"):
        evaluate(model, dataset, EvalSection(), show_progress=False)
    with pytest.warns(UserWarning, match=r"skipping bad sample: .*wide\.png"):
        _, matrix = evaluate(model, dataset, EvalSection(), show_progress=False, on_bad_sample="skip")
    assert int(matrix.sum()) == 20  # the 4x5 labelled pixels of good.png only
