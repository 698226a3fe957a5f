"""Segmentation metrics: a dataset-level confusion matrix and mIoU-style scores (its figure: ``viz``).

Intersection and union are accumulated over the whole dataset (never averaged per image). Means are
``nanmean`` over classes: a class absent from both ground truth and prediction has no IoU and is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from transeg.errors import TransegError

__all__ = ["ConfusionMatrix", "SegMetrics", "all_reduce_sum", "compute_metrics"]


def all_reduce_sum(counts: torch.Tensor) -> None:
    """Sum a CPU tensor over all torch.distributed ranks, in place; a no-op when not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "nccl":
        buf = counts.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(buf)
        counts.copy_(buf)
    else:
        dist.all_reduce(counts)


class ConfusionMatrix:
    """A (K, K) int64 pixel-count matrix, rows = ground truth, columns = prediction, kept on the CPU."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise TransegError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch. pred, target: (B, H, W) or (H, W) integer class maps of the same shape.

        Pixels whose target is ``ignore_index`` are skipped. Any other target outside [0, K), or a
        prediction outside [0, K) at a counted pixel, raises TransegError.
        """
        if pred.shape != target.shape or pred.ndim not in (2, 3):
            raise TransegError(
                f"pred and target must both be (B, H, W) or (H, W); got {tuple(pred.shape)} "
                f"and {tuple(target.shape)}"
            )
        for name, t in (("pred", pred), ("target", target)):
            if t.is_floating_point() or t.is_complex():
                raise TransegError(f"{name} must hold integer class indices, got dtype {t.dtype}")
        k = self.num_classes
        pred = pred.long()
        target = target.long()
        counted = target != self.ignore_index
        bad_target = target[counted & ((target < 0) | (target >= k))]
        if bad_target.numel():
            values = torch.unique(bad_target)[:5].tolist()
            raise TransegError(
                f"target value(s) {values} outside the class range [0, {k - 1}] "
                f"and not ignore_index={self.ignore_index}"
            )
        target = target[counted]
        pred = pred[counted]
        bad_pred = pred[(pred < 0) | (pred >= k)]
        if bad_pred.numel():
            values = torch.unique(bad_pred)[:5].tolist()
            raise TransegError(f"prediction value(s) {values} outside the class range [0, {k - 1}]")
        counts = torch.bincount(target * k + pred, minlength=k * k)
        self.matrix += counts.reshape(k, k).to(self.matrix.device)

    def reset(self) -> None:
        """Zero the counts."""
        self.matrix.zero_()

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix's counts into this one (same number of classes)."""
        if other.num_classes != self.num_classes:
            raise TransegError(
                f"cannot merge confusion matrices of {other.num_classes} and {self.num_classes} classes"
            )
        self.matrix += other.matrix.to(self.matrix.device)

    def all_reduce(self) -> None:
        """Sum the matrix over all torch.distributed ranks, in place; a no-op when not initialised."""
        all_reduce_sum(self.matrix)


@dataclass
class SegMetrics:
    """Scores from a confusion matrix, as fractions in [0, 1]; NaN where undefined.

    Per-class lists have length K. ``absent`` holds the indices of classes with no pixel in either
    ground truth or prediction; they are left out of every mean. ``by_object_size``: the JSON block
    of ``engine.object_size`` when the evaluation asked for it.
    """

    aAcc: float
    mAcc: float
    mIoU: float
    mDice: float
    fwIoU: float
    iou: list[float]
    acc: list[float]
    dice: list[float]
    gt_pixels: list[int]
    pred_pixels: list[int]
    class_names: list[str]
    absent: list[int] = field(default_factory=list)
    by_object_size: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        """A JSON-safe dict (NaN becomes None) with summary scores and a per-class list."""
        absent = set(self.absent)
        return {
            "aAcc": _json_float(self.aAcc),
            "mAcc": _json_float(self.mAcc),
            "mIoU": _json_float(self.mIoU),
            "mDice": _json_float(self.mDice),
            "fwIoU": _json_float(self.fwIoU),
            "num_classes": len(self.class_names),
            "absent": [self.class_names[i] for i in self.absent],
            "per_class": [
                {
                    "name": name,
                    "iou": _json_float(self.iou[i]),
                    "acc": _json_float(self.acc[i]),
                    "dice": _json_float(self.dice[i]),
                    "gt_pixels": self.gt_pixels[i],
                    "pred_pixels": self.pred_pixels[i],
                    "absent": i in absent,
                }
                for i, name in enumerate(self.class_names)
            ],
            **({"by_object_size": self.by_object_size} if self.by_object_size is not None else {}),
        }

    def format_table(self) -> str:
        """A plain-text per-class table (percentages) followed by summary lines."""
        absent = set(self.absent)
        name_w = max([len("Class"), *(len(n) for n in self.class_names)])
        gt_w = max(len("GT pixels"), *(len(str(n)) for n in self.gt_pixels))
        header = f"{'Class':<{name_w}}  {'IoU':>7}  {'Acc':>7}  {'Dice':>7}  {'GT pixels':>{gt_w}}"
        lines = [header, "-" * len(header)]
        for i, name in enumerate(self.class_names):
            scores = (self.iou[i], self.acc[i], self.dice[i])
            cells = ["absent"] * 3 if i in absent else [_pct(v) for v in scores]
            lines.append(
                f"{name:<{name_w}}  {cells[0]:>7}  {cells[1]:>7}  {cells[2]:>7}  {self.gt_pixels[i]:>{gt_w}}"
            )
        lines.append("-" * len(header))
        lines.append(
            f"aAcc {_pct(self.aAcc)}  mIoU {_pct(self.mIoU)}  mAcc {_pct(self.mAcc)}  "
            f"mDice {_pct(self.mDice)}  fwIoU {_pct(self.fwIoU)}"
        )
        if self.absent:
            names = ", ".join(self.class_names[i] for i in self.absent)
            lines.append(f"absent from ground truth and prediction (skipped in means): {names}")
        if self.by_object_size is not None:
            lines.append("mIoU by object size: " + "  ".join(
                f"{name} {_pct(math.nan if block['mIoU'] is None else block['mIoU'])} ({block['segments']} segments)"
                for name, block in self.by_object_size["buckets"].items()))
        return "\n".join(lines)


def compute_metrics(matrix: torch.Tensor | np.ndarray, class_names: list[str] | None = None) -> SegMetrics:
    """Scores from a (K, K) confusion matrix (rows = ground truth, columns = prediction).

    IoU_c = TP / (GT + Pred - TP), Acc_c = TP / GT, Dice_c = 2 TP / (GT + Pred). mIoU and mDice average
    over classes present in GT or prediction, mAcc over classes present in GT.
    fwIoU = sum_c freq_c * IoU_c with freq_c = GT_c / sum(GT), over classes present in GT.
    """
    m = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise TransegError(f"confusion matrix must be square (K, K), got shape {m.shape}")
    k = m.shape[0]
    if class_names is None:
        class_names = [f"class_{i}" for i in range(k)]
    elif len(class_names) != k:
        raise TransegError(f"got {len(class_names)} class names for a {k}-class confusion matrix")
    m = m.astype(np.float64)
    tp = np.diag(m)
    gt = m.sum(axis=1)
    pred = m.sum(axis=0)
    union = gt + pred - tp
    total = gt.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
        dice = np.where(union > 0, 2 * tp / (gt + pred), np.nan)
    has_gt = gt > 0
    fw_iou = float(np.sum(gt[has_gt] / total * iou[has_gt])) if total > 0 else math.nan
    return SegMetrics(
        aAcc=float(tp.sum() / total) if total > 0 else math.nan,
        mAcc=_nanmean(acc),
        mIoU=_nanmean(iou),
        mDice=_nanmean(dice),
        fwIoU=fw_iou,
        iou=iou.tolist(),
        acc=acc.tolist(),
        dice=dice.tolist(),
        gt_pixels=[int(v) for v in gt],
        pred_pixels=[int(v) for v in pred],
        class_names=list(class_names),
        absent=[int(i) for i in np.flatnonzero(union == 0)],
    )


# Five viridis anchors, interpolated linearly: 0 -> dark purple, 1 -> yellow.
def _nanmean(values: np.ndarray) -> float:
    """Mean over the finite entries; NaN when there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"
