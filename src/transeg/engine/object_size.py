"""mIoU by object size (Segmenter, Table 4): one confusion matrix per size bucket of the ground truth.

The paper reports mean IoU on small, medium and large objects without defining them. Here:

* **Objects** are the connected segments of the ground-truth map (``data.segments``): connected
  components of pixels of one class, 4-connected by default. They are not instances: two touching
  objects of one class form one segment, and a stuff region cut in two by an occluder forms two.
* **Sizes** follow COCO's area ranges, in pixels of the label map at its own resolution: small
  below 32² = 1024, medium from 1024 up to (not including) 96² = 9216, large from 9216 on.
* **Scores.** Every labelled pixel belongs to exactly one segment, hence to one bucket. Each bucket
  keeps its own (K, K) confusion matrix over its pixels only, and its IoU of class c is
  TP / (GT + Pred - TP) there: TP the pixels of class-c segments of that size predicted c, GT all
  pixels of class-c segments of that size, Pred the pixels of that bucket (segments of any class)
  predicted c. A prediction of c over a small object of another class is a false positive of the
  small bucket; a prediction of c over unlabelled pixels counts in no bucket. The bucket's mIoU is
  the mean over the classes with pixels in its ground truth or prediction, as ``metrics`` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from transeg.data.segments import CONNECTIVITIES, label_segments
from transeg.errors import TransegError
from transeg.metrics import ConfusionMatrix, all_reduce_sum, compute_metrics

BUCKETS = ("small", "medium", "large")
COCO_THRESHOLDS = (32 * 32, 96 * 96)  # pixel areas separating small | medium | large


def check_thresholds(thresholds: Sequence[int]) -> tuple[int, int]:
    """Two increasing positive pixel areas (small < A <= medium < B <= large)."""
    values = tuple(thresholds)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
        raise TransegError(f"size thresholds must be two integer pixel areas A B, got {values!r}")
    a, b = int(values[0]), int(values[1])
    if not 0 < a < b:
        raise TransegError(f"size thresholds {a} {b}: need 0 < A < B (pixel areas)")
    return a, b


def segment_buckets(label: np.ndarray, thresholds: tuple[int, int] = COCO_THRESHOLDS, ignore_index: int = 255,
                    connectivity: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W) ground truth -> the (H, W) int64 bucket of each pixel (0 small, 1 medium, 2 large; -1 at
    ``ignore_index``), and per segment its (S,) bucket and (S,) class."""
    segments, count = label_segments(label, ignore_index, connectivity)
    labelled = segments >= 0
    areas = np.bincount(segments[labelled], minlength=count)
    bucket = np.searchsorted(np.asarray(thresholds), areas, side="right")
    classes = np.zeros(count, np.int64)
    classes[segments[labelled]] = np.asarray(label)[labelled]
    return np.where(labelled, bucket[np.maximum(segments, 0)], -1), bucket, classes


class ObjectSizeMetrics:
    """Per-bucket (K, K) confusion matrices and per-bucket, per-class segment counts, over many images."""

    def __init__(self, num_classes: int, thresholds: Sequence[int] = COCO_THRESHOLDS, ignore_index: int = 255,
                 connectivity: int = 4) -> None:
        self.num_classes = num_classes
        self.thresholds = check_thresholds(thresholds)
        if connectivity not in CONNECTIVITIES:
            raise TransegError(f"size connectivity must be 4 or 8, got {connectivity!r}")
        self.ignore_index = ignore_index
        self.connectivity = connectivity
        self.matrices = [ConfusionMatrix(num_classes, ignore_index) for _ in BUCKETS]
        self.segments = torch.zeros(len(BUCKETS), num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one image: pred, target (H, W) integer class maps of one shape."""
        if target.ndim != 2:
            raise TransegError(f"object sizes need one (H, W) target at a time, got {tuple(target.shape)}")
        pixel_bucket, bucket, classes = segment_buckets(target.cpu().numpy(), self.thresholds, self.ignore_index,
                                                        self.connectivity)
        in_bucket = torch.from_numpy(pixel_bucket).to(target.device)
        for b, matrix in enumerate(self.matrices):  # checks the values: each labelled pixel is in one bucket
            matrix.update(pred, torch.where(in_bucket == b, target.long(), self.ignore_index))
        self.segments.index_put_((torch.from_numpy(bucket), torch.from_numpy(classes)),
                                 torch.ones(bucket.size, dtype=torch.int64), accumulate=True)

    def all_reduce(self) -> None:
        """Sum the counts over all torch.distributed ranks, in place; a no-op when not initialised."""
        for matrix in self.matrices:
            matrix.all_reduce()
        all_reduce_sum(self.segments)

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The ``by_object_size`` block of metrics.json: the setting, and under ``buckets`` (small,
        medium, large) each bucket's area range, mIoU, segment and pixel counts and per-class IoU
        (None where undefined)."""
        a, b = self.thresholds
        block: dict[str, Any] = {
            "thresholds_px": [a, b],
            "connectivity": self.connectivity,
            "definition": "objects: connected ground-truth segments of one class; bucket by area in label-map "
                          "pixels; per bucket, IoU over the pixels of its segments",
            "buckets": {},
        }
        ranges = ([0, a], [a, b], [b, None])
        for name, matrix, segments, area in zip(BUCKETS, self.matrices, self.segments, ranges, strict=True):
            scores = compute_metrics(matrix.matrix, None if class_names is None else list(class_names))
            block["buckets"][name] = {
                "area_px": area,
                "mIoU": None if math.isnan(scores.mIoU) else scores.mIoU,
                "segments": int(segments.sum()),
                "gt_pixels": int(sum(scores.gt_pixels)),
                "per_class": [
                    {"name": n, "iou": None if math.isnan(v) else v, "segments": int(s), "gt_pixels": g}
                    for n, v, s, g in zip(scores.class_names, scores.iou, segments.tolist(), scores.gt_pixels,
                                          strict=True)
                ],
            }
        return block
