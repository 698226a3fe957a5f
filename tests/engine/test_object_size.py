"""mIoU by object size (Segmenter Table 4, transeg.engine.object_size) on a hand-made pair."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transeg.data.datasets import build_dataset
from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.evaluate import evaluate
from transeg.engine.object_size import COCO_THRESHOLDS, ObjectSizeMetrics, check_thresholds, segment_buckets
from transeg.engine.recipe import EvalSection, parse_config
from transeg.errors import TransegError
from transeg.metrics import ConfusionMatrix
from transeg.models.config import ModelConfig
from transeg.models.decoders.linear import LinearDecoderConfig
from transeg.models.encoders.vit import ViTConfig
from transeg.models.factory import build_model

# class 2: one pixel (small below 2 px); class 1: a 2x2 square (medium, 2 <= 4 < 5); class 0: 19 px (large)
TARGET = torch.tensor([[0, 0, 0, 0, 0, 0],
                       [0, 1, 1, 0, 0, 0],
                       [0, 1, 1, 0, 2, 0],
                       [0, 0, 0, 0, 0, 0]])
PRED = torch.tensor([[0, 0, 0, 0, 0, 0],
                     [0, 1, 1, 1, 0, 0],
                     [0, 1, 0, 0, 0, 0],
                     [0, 0, 0, 0, 0, 2]])


def hand_block(thresholds=(2, 5)) -> dict:
    metric = ObjectSizeMetrics(3, thresholds)
    metric.update(PRED, TARGET)
    return metric.to_dict(["a", "b", "c"])


def test_hand_made_pair():
    buckets = hand_block()["buckets"]
    # small: the class-2 pixel, predicted 0 -> IoU_2 = 0, IoU_0 = 0 / (0 + 1 - 0) = 0
    assert buckets["small"]["mIoU"] == 0.0
    # medium: class 1 TP 3, GT 4, Pred 3 -> 3/4; class 0 predicted once there -> 0
    assert [c["iou"] for c in buckets["medium"]["per_class"]] == [0.0, 0.75, None]
    assert buckets["medium"]["mIoU"] == pytest.approx(0.375)
    # large: class 0 TP 17, GT 19, Pred 17; its pixels predicted 1 and 2 give those classes IoU 0
    assert buckets["large"]["mIoU"] == pytest.approx(17 / 19 / 3)
    assert [buckets[b]["segments"] for b in ("small", "medium", "large")] == [1, 1, 1]
    assert [buckets[b]["gt_pixels"] for b in ("small", "medium", "large")] == [1, 4, 19]
    assert buckets["medium"]["per_class"][1] == {"name": "b", "iou": 0.75, "segments": 1, "gt_pixels": 4}
    json.dumps(hand_block())  # JSON-safe


def test_an_area_equal_to_a_threshold_falls_in_the_larger_bucket():
    _, bucket, classes = segment_buckets(TARGET.numpy(), (4, 5))
    assert dict(zip(classes.tolist(), bucket.tolist(), strict=True)) == {0: 2, 1: 1, 2: 0}
    _, bucket, classes = segment_buckets(TARGET.numpy(), (2, 4))
    assert dict(zip(classes.tolist(), bucket.tolist(), strict=True)) == {0: 2, 1: 2, 2: 0}


def test_buckets_partition_the_confusion_matrix():
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.integers(0, 4, (20, 30)))
    target[torch.from_numpy(rng.random((20, 30)) < 0.1)] = 255
    pred = torch.from_numpy(rng.integers(0, 4, (20, 30)))
    metric, whole = ObjectSizeMetrics(4, (3, 8)), ConfusionMatrix(4)
    metric.update(pred, target)
    whole.update(pred, target)
    assert torch.equal(sum(m.matrix for m in metric.matrices), whole.matrix)
    assert all(m.matrix.sum() > 0 for m in metric.matrices)


def test_a_target_outside_the_classes_is_named():
    with pytest.raises(TransegError, match=r"target value\(s\) \[7\] outside the class range \[0, 2\]"):
        ObjectSizeMetrics(3).update(PRED, torch.where(TARGET == 2, 7, TARGET))


def test_two_touching_objects_of_one_class_are_one_segment():
    target = torch.zeros(4, 4, dtype=torch.long)
    target[0, :2] = target[1, 1:3] = 1  # two 2-pixel bars touching along an edge: one 4-pixel segment
    pixel_bucket, bucket, classes = segment_buckets(target.numpy(), (3, 10))
    assert classes.tolist() == [1, 0]  # raster order of the segments' first pixels
    assert bucket.tolist() == [1, 2]  # class 1: 4 px, medium; class 0: 12 px, large
    assert (pixel_bucket[target.numpy() == 1] == 1).all()


def test_thresholds_are_checked():
    assert check_thresholds(COCO_THRESHOLDS) == (1024, 9216)
    with pytest.raises(TransegError, match=r"size thresholds 9216 1024: need 0 < A < B"):
        check_thresholds((9216, 1024))
    with pytest.raises(TransegError, match="two integer pixel areas"):
        check_thresholds((32.5, 96))
    with pytest.raises(TransegError, match="size connectivity must be 4 or 8, got 6"):
        ObjectSizeMetrics(3, connectivity=6)
    config = {"data": {"dataset": "camvid", "root": "/x"}, "eval": {"size_thresholds": [96, 32]}}
    with pytest.raises(TransegError, match=r"c.yaml: eval: size_thresholds \(96, 32\) are not"):
        parse_config(config, "c.yaml")


def test_evaluation_adds_the_block(tmp_path):
    root = write_synthetic_dataset(tmp_path, num_train=1, num_val=2, size=(64, 64))
    dataset = build_dataset("folder", root, "val")
    vit = ViTConfig(patch_size=16, embed_dim=32, depth=1, heads=2, image_size=64)
    model = build_model(ModelConfig(encoder="vit", encoder_config=vit, decoder="linear",
                                    decoder_config=LinearDecoderConfig(), num_classes=dataset.num_classes))
    plain, _ = evaluate(model, dataset, EvalSection(), show_progress=False)
    metrics, matrix = evaluate(model, dataset, EvalSection(by_object_size=True, size_thresholds=(64, 512)),
                               show_progress=False)
    assert "by_object_size" not in plain.to_dict()
    assert metrics.mIoU == plain.mIoU
    block = metrics.to_dict()["by_object_size"]
    assert block["thresholds_px"] == [64, 512]
    assert sum(b["gt_pixels"] for b in block["buckets"].values()) == int(matrix.sum())
    assert "mIoU by object size: small" in metrics.format_table()
