"""Evaluation over a dataset: predictions at the label resolution accumulated in one confusion matrix."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from rich.progress import Progress

from transeg.data.datasets import SegmentationDataset
from transeg.data.transforms import rescale_size, resize_image
from transeg.engine.distributed import DistInfo
from transeg.engine.recipe import EvalSection
from transeg.errors import TransegError
from transeg.inference.modes import Predictor, logits_to_labels
from transeg.metrics import ConfusionMatrix, SegMetrics, compute_metrics
from transeg.models.segmentor import Segmentor


def build_predictor(model: Segmentor, cfg: EvalSection, size_divisor: int | None = None,
                    device: torch.device | str = "cpu") -> Predictor:
    return Predictor(model, mode=cfg.mode, crop=cfg.crop, stride=cfg.stride, scales=cfg.scales, flip=cfg.flip,
                     size_divisor=size_divisor, batch_size=cfg.batch_size, device=device)


def evaluate(model: Segmentor, dataset: SegmentationDataset, cfg: EvalSection,
             test_scale: tuple[int, int] | None = None, size_divisor: int | None = None,
             info: DistInfo | None = None, show_progress: bool = True,
             on_bad_sample: str = "error") -> tuple[SegMetrics, torch.Tensor]:
    """mIoU and friends of ``model`` on ``dataset`` (each process takes every world_size-th image).

    Each image is resized keeping its ratio to fit ``test_scale`` (if given), predicted with the
    configured mode, and its logits are resized back to the label map's size before the argmax.
    An unreadable or invalid sample (labels checked as ``transeg data check`` does) stops with its
    name, or with ``on_bad_sample="skip"`` is left out with a warning.
    Returns the metrics and the (K, K) confusion matrix (rows: ground truth).
    """
    info = info or DistInfo()
    was_training = model.training
    predictor = build_predictor(model, cfg, size_divisor, info.device)
    matrix = ConfusionMatrix(model.num_classes, ignore_index=dataset.ignore_index)
    indices = range(info.rank, len(dataset), info.world_size)
    with Progress(transient=True, disable=not (show_progress and info.is_main)) as progress:
        task = progress.add_task("evaluate", total=len(indices))
        for i in indices:
            try:
                sample = dataset.load(i)
            except TransegError as exc:
                if on_bad_sample == "error":
                    raise
                warnings.warn(f"skipping bad sample: {exc}", stacklevel=2)
                progress.advance(task)
                continue
            image, label = sample["image"], torch.from_numpy(sample["label"].astype("int64"))
            if test_scale is not None:
                image = resize_image(image, *rescale_size(*image.shape[:2], test_scale))
            logits = predictor.predict_logits(image)
            logits = F.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False)
            matrix.update(logits_to_labels(logits)[0].cpu(), label)
            progress.advance(task)
    matrix.all_reduce()
    model.train(was_training)
    return compute_metrics(matrix.matrix, dataset.classes), matrix.matrix
