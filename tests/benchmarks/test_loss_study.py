"""``benchmarks/loss_study.py`` end to end on a tiny generated dataset (two loss settings, seconds each):
its table and files, and that ``ce-auto`` really trained with the class weights. The real study runs on
CamVid for 30 minutes per loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from benchmarks import loss_study
from transeg.data.synthetic import SYNTHETIC_CLASSES, write_synthetic_dataset


def _tiny(tmp_path):
    """A generated 4 + 2 scene dataset (64 px) and a recipe for it: (config path, data root)."""
    root = write_synthetic_dataset(tmp_path / "data", 4, 2, (64, 64))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "folder", "root": str(root), "crop_size": [64, 64], "scale": [64, 64],
                 "test_scale": None, "num_workers": 0},
        "model": {"name": "segformer-b0"},
        "optimizer": {"type": "adamw", "lr": 1e-3},
        "schedule": {"iterations": 100, "warmup_iters": 5},
        "train": {"batch_size": 2},
    }))
    return config, root


def test_one_run_trains_with_its_loss_and_evaluates(tmp_path):
    config, root = _tiny(tmp_path)
    threads = torch.get_num_threads()
    try:
        report = loss_study.run("ce-auto", config, root, 0.02, 1, tmp_path)
    finally:
        torch.set_num_threads(threads)  # run() sets its own, as each study process does
    assert json.loads((tmp_path / "ce-auto.json").read_text()) == report
    assert report["terms"] == [{"type": "cross_entropy", "class_weight": "auto"}]
    assert 1 <= report["iterations"] <= report["planned_iterations"] and 0.0 <= report["mIoU"] <= 1.0
    assert list(report["per_class_iou"]) == list(SYNTHETIC_CLASSES)
    # class_weight: auto counted the training split into the run directory: the loss really was weighted
    weights = json.loads((tmp_path / "ce-auto" / "class_weights.json").read_text())["class_weight"]
    assert len(weights) == len(SYNTHETIC_CLASSES) and weights[0] < max(weights)  # background: the most pixels


@pytest.mark.slow
def test_two_settings_side_by_side_and_tabulated(tmp_path):
    config, root = _tiny(tmp_path)
    out = tmp_path / "study"
    reports = loss_study.main(["--minutes", "0.03", "--losses", "ce", "ce-auto", "--config", str(config),
                               "--data-root", str(root), "--out", str(out), "--threads", "1", "--parallel", "2"])
    saved = json.loads((out / "loss_study.json").read_text())
    assert saved["runs"] == reports and [r["loss"] for r in reports] == ["ce", "ce-auto"]
    for r in reports:
        assert r["iterations"] >= 1 and 0.0 <= r["mIoU"] <= 1.0
        assert list(r["per_class_iou"]) == list(SYNTHETIC_CLASSES)
        assert np.isclose(r["mIoU"], np.nanmean([v for v in r["per_class_iou"].values()]))
    assert (out / "ce-auto" / "class_weights.json").exists()
    assert not (out / "ce" / "class_weights.json").exists()
    table = (out / "loss_study.md").read_text()
    assert "| loss | iterations | mIoU | background |" in table
    assert table.count("\n| ce") == 2


def test_thin_classes_are_marked():
    report = {"loss": "ce", "iterations": 3, "mIoU": 0.5,
              "per_class_iou": {"Road": 0.9, "Pole": 0.1, "SignSymbol": float("nan")}}
    table = loss_study.markdown([report], "header")
    assert "| Road | **Pole** * | **SignSymbol** * |" in table
    assert "| ce | 3 | 50.0 | 90.0 | **10.0** | **n/a** |" in table
