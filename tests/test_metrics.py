"""Tests for transeg.metrics: confusion-matrix accumulation, scores against hand-computed values, PNG."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from transeg.errors import TransegError
from transeg.metrics import ConfusionMatrix, compute_metrics
from transeg.viz import colormap, confusion_cell_size

# (target, pred) pixels for 4 classes: class 2 appears only in the prediction, class 3 nowhere,
# and two ignore pixels (predicted as class 3) that must not count.
PAIRS = [(0, 0)] * 3 + [(0, 1), (0, 2), (1, 0)] + [(1, 1)] * 2 + [(255, 3)] * 2
# Rows = GT, cols = prediction.
EXPECTED = [[3, 1, 1, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def _hand_example() -> ConfusionMatrix:
    target = torch.tensor([t for t, _ in PAIRS]).reshape(2, 5)
    pred = torch.tensor([p for _, p in PAIRS]).reshape(2, 5)
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    return cm


def _random_batch(gen: torch.Generator, k: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.randint(0, k, shape, generator=gen)
    target[torch.rand(shape, generator=gen) < 0.2] = 255
    pred = torch.randint(0, k, shape, generator=gen)
    return pred, target


def test_matrix_hand_example() -> None:
    cm = _hand_example()
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == EXPECTED


def test_metrics_hand_example() -> None:
    m = compute_metrics(_hand_example().matrix, ["road", "car", "sky", "tree"])
    # tp = (3, 2, 0, 0), GT = (5, 3, 0, 0), pred = (4, 3, 1, 0), 8 counted pixels.
    assert m.aAcc == pytest.approx(5 / 8)
    assert m.iou[:3] == pytest.approx([3 / 6, 2 / 4, 0.0])
    assert math.isnan(m.iou[3])
    assert m.mIoU == pytest.approx((0.5 + 0.5 + 0.0) / 3)  # class 3 skipped, prediction-only class 2 counts
    assert m.acc[:2] == pytest.approx([3 / 5, 2 / 3])
    assert math.isnan(m.acc[2]) and math.isnan(m.acc[3])
    assert m.mAcc == pytest.approx((3 / 5 + 2 / 3) / 2)
    assert m.dice[:3] == pytest.approx([6 / 9, 4 / 6, 0.0])
    assert math.isnan(m.dice[3])
    assert m.mDice == pytest.approx((6 / 9 + 4 / 6) / 3)
    assert m.fwIoU == pytest.approx(5 / 8 * 0.5 + 3 / 8 * 0.5)
    assert m.gt_pixels == [5, 3, 0, 0]
    assert m.pred_pixels == [4, 3, 1, 0]
    assert m.absent == [3]


def test_fwiou_formula() -> None:
    m = compute_metrics(np.array([[8, 2], [1, 1]]))
    assert m.fwIoU == pytest.approx(10 / 12 * 8 / 11 + 2 / 12 * 1 / 4)
    assert m.mIoU == pytest.approx((8 / 11 + 1 / 4) / 2)

    mat = torch.randint(0, 50, (6, 6), generator=torch.Generator().manual_seed(0))
    mat[2] = 0  # a class with no GT contributes nothing
    res = compute_metrics(mat)
    gt = mat.sum(1).double()
    iou = mat.diag() / (gt + mat.sum(0) - mat.diag())
    expected = sum(gt[c] / gt.sum() * iou[c] for c in range(6) if gt[c] > 0)
    assert res.fwIoU == pytest.approx(float(expected))


def test_accumulation_equals_single_update() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [_random_batch(gen, 7, (2, 9, 11)) for _ in range(4)]
    acc = ConfusionMatrix(7)
    for pred, target in batches:
        acc.update(pred, target)
    whole = ConfusionMatrix(7)
    whole.update(torch.cat([p for p, _ in batches]), torch.cat([t for _, t in batches]))
    assert torch.equal(acc.matrix, whole.matrix)

    ref = np.zeros((7, 7), dtype=np.int64)
    for pred, target in batches:
        keep = target != 255
        np.add.at(ref, (target[keep].numpy(), pred[keep].numpy()), 1)
    assert np.array_equal(acc.matrix.numpy(), ref)

    # A (H, W) update, uint8 labels and merge give the same counts.
    merged = ConfusionMatrix(7)
    for pred, target in batches:
        part = ConfusionMatrix(7)
        for p, t in zip(pred, target, strict=True):
            part.update(p.to(torch.uint8), t.to(torch.uint8))
        merged.merge(part)
    assert torch.equal(merged.matrix, whole.matrix)
    merged.reset()
    assert merged.matrix.sum() == 0


def test_out_of_range_target_raises() -> None:
    cm = ConfusionMatrix(4)
    with pytest.raises(TransegError, match=r"\[7\]"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 7], [255, 1]]))
    with pytest.raises(TransegError, match=r"\[-1\]"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, -1], [255, 1]]))
    with pytest.raises(TransegError, match="prediction"):
        cm.update(torch.tensor([[0, 4], [0, 0]]), torch.tensor([[0, 1], [2, 3]]))
    with pytest.raises(TransegError, match=r"\(B, H, W\)"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TransegError, match="integer"):
        cm.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    assert cm.matrix.sum() == 0
    # An out-of-range prediction at an ignored pixel is not counted and not an error.
    cm.update(torch.tensor([[0, 9]]), torch.tensor([[0, 255]]))
    assert cm.matrix.sum() == 1


def test_merge_class_mismatch_raises() -> None:
    with pytest.raises(TransegError):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))


def test_to_dict_json_round_trip() -> None:
    m = compute_metrics(_hand_example().matrix, ["road", "car", "sky", "tree"])
    text = json.dumps(m.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back == m.to_dict()
    assert back["mIoU"] == pytest.approx(1 / 3)
    assert back["absent"] == ["tree"]
    tree = back["per_class"][3]
    assert tree == {
        "name": "tree", "iou": None, "acc": None, "dice": None,
        "gt_pixels": 0, "pred_pixels": 0, "absent": True,
    }  # fmt: skip
    assert back["per_class"][2]["acc"] is None and back["per_class"][2]["iou"] == 0.0

    empty = compute_metrics(torch.zeros(2, 2, dtype=torch.int64)).to_dict()
    json.dumps(empty, allow_nan=False)
    assert empty["aAcc"] is None and empty["mIoU"] is None and empty["fwIoU"] is None


def test_format_table() -> None:
    table = compute_metrics(_hand_example().matrix, ["road", "car", "sky", "tree"]).format_table()
    rows = {line.split()[0]: line for line in table.splitlines() if line.split()}
    assert rows["tree"].split()[1:4] == ["absent"] * 3
    assert rows["road"].split()[1:] == ["50.00", "60.00", "66.67", "5"]
    assert rows["sky"].split()[1:] == ["0.00", "n/a", "0.00", "0"]
    assert "mIoU 33.33" in table and "fwIoU 50.00" in table and "aAcc 62.50" in table
    assert "skipped in means): tree" in table


def test_cell_size() -> None:
    assert confusion_cell_size(2) == 400
    assert confusion_cell_size(30) == 32  # room for a percentage up to the grid's limit
    assert confusion_cell_size(150) == 5
    assert confusion_cell_size(1000) == 4


def test_colormap_endpoints() -> None:
    rgb = colormap(np.array([0.0, 1.0, -1.0, 2.0]))
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 3)
    assert rgb[0].tolist() == rgb[2].tolist() == [68, 1, 84]
    assert rgb[1].tolist() == rgb[3].tolist() == [253, 231, 37]


def test_all_reduce_noop_without_distributed() -> None:
    cm = _hand_example()
    cm.all_reduce()
    assert cm.matrix.tolist() == EXPECTED


def _all_reduce_worker(rank: int, init_file: str, out: torch.Tensor) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        cm = ConfusionMatrix(3)
        cm.update(torch.tensor([[rank, 2]]), torch.tensor([[rank, 1]]))
        cm.all_reduce()
        out[rank] = cm.matrix
    finally:
        dist.destroy_process_group()


def test_all_reduce_two_ranks(tmp_path) -> None:
    out = torch.zeros(2, 3, 3, dtype=torch.int64).share_memory_()
    mp.spawn(_all_reduce_worker, args=(str(tmp_path / "init"), out), nprocs=2)
    expected = [[1, 0, 0], [0, 1, 2], [0, 0, 0]]
    assert out[0].tolist() == expected and out[1].tolist() == expected
