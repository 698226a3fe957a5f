"""Evaluation over a dataset: predictions at the label resolution accumulated in one confusion matrix,
at one or several test scales, and the ``metrics.json`` report of the results."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import Progress

from transeg.data.datasets import SegmentationDataset
from transeg.data.transforms import rescale_size, resize_image
from transeg.engine.distributed import DistInfo
from transeg.engine.object_size import ObjectSizeMetrics
from transeg.engine.recipe import EvalSection
from transeg.errors import TransegError
from transeg.inference.modes import Predictor, logits_to_labels
from transeg.metrics import ConfusionMatrix, SegMetrics, compute_metrics
from transeg.models.segmentor import Segmentor
from transeg.viz import save_confusion_png
from transeg.weights.files import write_atomic

TestScale = tuple[int, int] | None


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


def require_same_classes(model: Segmentor, dataset: SegmentationDataset, name: str) -> None:
    """Refuse to evaluate ``model`` (called ``name`` in the message) on a dataset of another class count."""
    if dataset.num_classes != model.num_classes:
        raise TransegError(f"{name}: {model.num_classes} classes, the dataset has {dataset.num_classes}")


@dataclass(frozen=True)
class ScaleEvaluation:
    """The metrics and (K, K) confusion matrix of one evaluation at ``test_scale`` (None: no resize)."""

    test_scale: TestScale
    metrics: SegMetrics
    confusion: torch.Tensor

    @property
    def label(self) -> str:
        """``WxH``, or ``none`` without a test scale: the name of this block in ``metrics.json``."""
        return "none" if self.test_scale is None else f"{self.test_scale[0]}x{self.test_scale[1]}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON block: ``test_scale`` then ``SegMetrics.to_dict()``."""
        return {"test_scale": None if self.test_scale is None else list(self.test_scale), **self.metrics.to_dict()}


def evaluate_test_scales(model: Segmentor, dataset: SegmentationDataset, cfg: EvalSection,
                         test_scales: Sequence[TestScale], size_divisor: int | None = None,
                         on_result: Callable[[ScaleEvaluation], None] | None = None,
                         show_progress: bool = True, on_bad_sample: str = "error",
                         info: DistInfo | None = None) -> list[ScaleEvaluation]:
    """``evaluate`` once per test scale, in order; ``on_result`` receives each result as it is ready.
    Under torchrun (``info``) each process evaluates its share of the images and every process gets
    the results summed over all of them."""
    results = []
    for scale in test_scales:
        metrics, confusion = evaluate(model, dataset, cfg, scale, size_divisor, info=info,
                                      show_progress=show_progress, on_bad_sample=on_bad_sample)
        results.append(ScaleEvaluation(scale, metrics, confusion))
        if on_result is not None:
            on_result(results[-1])
    return results


def metrics_report(results: Sequence[ScaleEvaluation], model: str, split: str, mode: str,
                   precision: str) -> dict[str, Any]:
    """The ``metrics.json`` content: what was evaluated (``model`` as the user named it, ``split``,
    ``mode``, ``precision``), then the one result's block flat, or every block under ``test_scales``
    by label."""
    header = {"model": model, "split": split, "mode": mode, "precision": precision}
    if len(results) == 1:
        return {**header, **results[0].to_dict()}
    return {**header, "test_scales": {result.label: result.to_dict() for result in results}}


def save_confusion_pngs(results: Sequence[ScaleEvaluation], out_dir: Path, class_names: list[str]) -> list[Path]:
    """Write each result's confusion matrix into ``out_dir``: ``confusion.png`` for one result,
    ``confusion_<label>.png`` for each of several. Returns the paths."""
    names = ["confusion.png"] if len(results) == 1 else [f"confusion_{result.label}.png" for result in results]
    paths = [out_dir / name for name in names]
    for result, path in zip(results, paths, strict=True):
        write_atomic(path, lambda tmp, result=result: save_confusion_png(result.confusion, Path(tmp), class_names))
    return paths


def write_metrics_json(report: dict[str, Any], path: Path) -> Path:
    """Write ``report`` as indented JSON; a crash never leaves half a file."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    return path
