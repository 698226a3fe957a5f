"""Evaluation at several test scales and the metrics.json report, as a Python user calls them."""

from __future__ import annotations

import json

import pytest
import torch

import transeg
from transeg.data.datasets import build_dataset
from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.evaluate import (
    evaluate,
    evaluate_test_scales,
    metrics_report,
    require_same_classes,
    save_confusion_pngs,
    write_metrics_json,
)
from transeg.engine.recipe import EvalSection
from transeg.errors import TransegError

BLOCK_KEYS = ["test_scale", "aAcc", "mAcc", "mIoU", "mDice", "fwIoU", "num_classes", "absent", "per_class"]
HEADER_KEYS = ["model", "split", "mode", "precision"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = write_synthetic_dataset(tmp_path_factory.mktemp("eval") / "d", num_train=1, num_val=2, size=(64, 48))
    torch.manual_seed(0)
    return transeg.create_model("segformer-b0", num_classes=6), build_dataset("folder", root, "val")


@pytest.fixture(scope="module")
def two_scales(setup):
    model, dataset = setup
    seen = []
    results = evaluate_test_scales(model, dataset, EvalSection(), [(96, 64), None], on_result=seen.append,
                                   show_progress=False)
    assert seen == results
    return results


def test_each_scale_is_one_evaluation_in_order(setup, two_scales):
    model, dataset = setup
    assert [r.test_scale for r in two_scales] == [(96, 64), None]
    assert [r.label for r in two_scales] == ["96x64", "none"]
    metrics, confusion = evaluate(model, dataset, EvalSection(), (96, 64), show_progress=False)
    assert two_scales[0].metrics.to_dict() == metrics.to_dict()
    assert torch.equal(two_scales[0].confusion, confusion)


def test_report_of_one_scale_is_flat(two_scales):
    report = metrics_report(two_scales[:1], model="m.safetensors", split="val", mode="whole", precision="fp32")
    assert list(report) == HEADER_KEYS + BLOCK_KEYS
    assert report["model"] == "m.safetensors" and report["test_scale"] == [96, 64]
    assert list(report["per_class"][0]) == ["name", "iou", "acc", "dice", "gt_pixels", "pred_pixels", "absent"]


def test_report_of_several_scales_nests_them_by_label(two_scales):
    report = metrics_report(two_scales, model="m", split="val", mode="whole", precision="bf16")
    assert list(report) == [*HEADER_KEYS, "test_scales"]
    assert list(report["test_scales"]) == ["96x64", "none"]
    assert all(list(block) == BLOCK_KEYS for block in report["test_scales"].values())
    assert report["test_scales"]["none"]["test_scale"] is None and report["precision"] == "bf16"


def test_metrics_json_is_the_indented_report_and_leaves_no_temporary_file(two_scales, tmp_path):
    report = metrics_report(two_scales, model="m", split="val", mode="whole", precision="fp32")
    path = write_metrics_json(report, tmp_path / "out" / "metrics.json")
    assert path.read_text() == json.dumps(report, indent=2)
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


def test_confusion_pngs_are_named_by_label_only_when_several(two_scales, tmp_path):
    assert [p.name for p in save_confusion_pngs(two_scales[:1], tmp_path, list("abcdef"))] == ["confusion.png"]
    names = [p.name for p in save_confusion_pngs(two_scales, tmp_path, list("abcdef"))]
    assert names == ["confusion_96x64.png", "confusion_none.png"]
    assert all((tmp_path / name).is_file() for name in names)


def test_class_count_mismatch_names_the_model(setup):
    _, dataset = setup
    with pytest.raises(TransegError, match=r"^b0: 150 classes, the dataset has 6$"):
        require_same_classes(transeg.create_model("segformer-b0"), dataset, "b0")
    require_same_classes(transeg.create_model("segformer-b0", num_classes=6), dataset, "b0")
