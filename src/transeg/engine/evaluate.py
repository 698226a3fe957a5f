"""Evaluation over a dataset: predictions at the label resolution accumulated in one confusion matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from rich.progress import Progress

from transeg.data.datasets import SegmentationDataset
from transeg.data.transforms import rescale_size, resize_image
from transeg.engine.distributed import DistInfo
from transeg.engine.object_size import ObjectSizeMetrics
from transeg.engine.recipe import EvalSection
from transeg.inference.modes import Predictor, logits_to_labels
from transeg.metrics import ConfusionMatrix, SegMetrics, compute_metrics
from transeg.models.segmentor import Segmentor


def build_predictor(model: Segmentor, cfg: EvalSection, size_divisor: int | None = None,
                    device: torch.device | str = "cpu") -> Predictor:
    return Predictor(model, mode=cfg.mode, crop=cfg.crop, stride=cfg.stride, scales=cfg.scales, flip=cfg.flip,
                     size_divisor=size_divisor, batch_size=cfg.batch_size, device=device)


def evaluate(model: Segmentor, dataset: SegmentationDataset, cfg: EvalSection,
             test_scale: tuple[int, int] | None = None, size_divisor: int | None = None,
             info: DistInfo | None = None, show_progress: bool = True) -> tuple[SegMetrics, torch.Tensor]:
    """mIoU and friends of ``model`` on ``dataset`` (each process takes every world_size-th image).

    Each image is resized keeping its ratio to fit ``test_scale`` (if given), predicted with the
    configured mode, and its logits are resized back to the label map's size before the argmax.
    Returns the metrics and the (K, K) confusion matrix (rows: ground truth). With
    ``cfg.by_object_size`` the metrics also hold mIoU by ground-truth segment size (``object_size``).
    """
    info = info or DistInfo()
    was_training = model.training
    predictor = build_predictor(model, cfg, size_divisor, info.device)
    matrix = ConfusionMatrix(model.num_classes, ignore_index=dataset.ignore_index)
    by_size = ObjectSizeMetrics(model.num_classes, cfg.size_thresholds, dataset.ignore_index,
                                cfg.size_connectivity) if cfg.by_object_size else None
    indices = range(info.rank, len(dataset), info.world_size)
    with Progress(transient=True, disable=not (show_progress and info.is_main)) as progress:
        task = progress.add_task("evaluate", total=len(indices))
        for i in indices:
            sample = dataset.load(i)
            image, label = sample["image"], torch.from_numpy(sample["label"].astype("int64"))
            if test_scale is not None:
                image = resize_image(image, *rescale_size(*image.shape[:2], test_scale))
            logits = predictor.predict_logits(image)
            logits = F.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False)
            pred = logits_to_labels(logits)[0].cpu()
            matrix.update(pred, label)
            if by_size is not None:
                by_size.update(pred, label)
            progress.advance(task)
    matrix.all_reduce()
    model.train(was_training)
    metrics = compute_metrics(matrix.matrix, dataset.classes)
    if by_size is not None:
        by_size.all_reduce()
        metrics.by_object_size = by_size.to_dict(dataset.classes)
    return metrics, matrix.matrix
