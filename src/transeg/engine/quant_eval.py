"""An INT8 model against its fp32 export on a dataset: label agreement and the mIoU change."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import Progress

from transeg.data.datasets import SegmentationDataset
from transeg.data.transforms import rescale_size, resize_image
from transeg.errors import TransegError
from transeg.inference.backends import OnnxSegmentor
from transeg.inference.modes import Predictor
from transeg.inference.quantize import onnx_metadata
from transeg.metrics import ConfusionMatrix, compute_metrics
from transeg.models.factory import model_config_from_json

Labeler = Callable[[np.ndarray], np.ndarray]


def onnx_labeler(path: str | os.PathLike[str], size_divisor: int | None = None,
                 threads: int | None = None) -> Labeler:
    """(H, W, 3) uint8 RGB -> (H, W) labels by a transeg ONNX file in ONNX Runtime: a self-contained
    graph (uint8 input) is fed the image as is; a float-input one runs in ``Predictor`` ('whole' mode,
    ``size_divisor``) as ``transeg predict --backend onnx`` does."""
    meta = onnx_metadata(path)
    if "transeg_config" not in meta:
        raise TransegError(f"{path}: not a transeg ONNX export (no transeg_config in its metadata)")
    config = model_config_from_json(meta["transeg_config"], str(path))
    runner = OnnxSegmentor(path, config, int(meta["min_input_size"]), threads)
    if runner.session.get_inputs()[0].type == "tensor(float)":
        predictor = Predictor(runner, size_divisor=size_divisor)
        return predictor.predict

    def label(image: np.ndarray) -> np.ndarray:
        (out,) = runner.session.run(None, {runner.input_name: image[None]})
        if out.ndim == 3:  # labels
            return out[0]
        if out.shape[1] == 1:  # binary: probability above 1/2, or logit above 0
            return (out[0, 0] > (0.5 if meta.get("output", "").startswith("probs") else 0.0)).astype(np.uint8)
        return out[0].argmax(0)

    return label


@dataclass(frozen=True)
class QuantEval:
    """``agreement``: the share of pixels where INT8 and fp32 give the same label; mIoU in percent."""

    images: int
    agreement: float
    miou_fp32: float
    miou_int8: float

    @property
    def drop(self) -> float:
        """mIoU points lost by INT8 (negative: gained)."""
        return self.miou_fp32 - self.miou_int8

    def to_json(self) -> str:
        return json.dumps({"images": self.images, "label_agreement": self.agreement, "miou_fp32": self.miou_fp32,
                           "miou_int8": self.miou_int8, "miou_drop": self.drop})


def compare_int8(fp32: Labeler, int8: Labeler, dataset: SegmentationDataset,
                 test_scale: tuple[int, int] | None = None) -> QuantEval:
    """Both labelers over ``dataset``: pixel agreement and each one's mIoU. With ``test_scale`` images are
    resized keeping their ratio as ``transeg eval`` does, and labels brought back (nearest) to the
    ground truth's size."""
    matrices = [ConfusionMatrix(dataset.num_classes, dataset.ignore_index) for _ in range(2)]
    same = total = 0
    with Progress(transient=True) as progress:
        task = progress.add_task("INT8 vs fp32", total=len(dataset))
        for i in range(len(dataset)):
            sample = dataset.load(i)
            image, truth = sample["image"], torch.from_numpy(sample["label"].astype(np.int64))
            if test_scale is not None:
                image = resize_image(image, *rescale_size(*image.shape[:2], test_scale))
            preds = []
            for labeler, matrix in zip((fp32, int8), matrices, strict=True):
                pred = torch.from_numpy(np.asarray(labeler(image)).astype(np.int64))
                if pred.shape != truth.shape:
                    step = (pred.shape[0] / truth.shape[0], pred.shape[1] / truth.shape[1])
                    rows = (torch.arange(truth.shape[0]) * step[0]).long().clamp(max=pred.shape[0] - 1)
                    cols = (torch.arange(truth.shape[1]) * step[1]).long().clamp(max=pred.shape[1] - 1)
                    pred = pred[rows][:, cols]
                matrix.update(pred, truth)
                preds.append(pred)
            same += int((preds[0] == preds[1]).sum())
            total += preds[0].numel()
            progress.advance(task)
    miou = [compute_metrics(m.matrix, list(dataset.classes)).mIoU * 100 for m in matrices]
    return QuantEval(len(dataset), same / max(total, 1), miou[0], miou[1])

