"""ONNX export with dynamic batch, height and width, and an ONNX Runtime module that runs it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transeg.errors import TransegError
from transeg.models.segmentor import Segmentor
from transeg.weights.io import write_atomic

DEFAULT_OPSET = 18


def export_onnx(model: Segmentor, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET,
                size: tuple[int, int] | None = None) -> Path:
    """Write ``model`` as ONNX; input ``image`` (B, 3, H, W) float32, output ``logits`` (B, K, h, w).

    The batch is dynamic; so are height and width unless ``size`` fixes them. Encoders whose shape
    arithmetic the exporter cannot handle symbolically in reasonable time (Swin: per-block window
    padding, shifted-window masks) say so with ``onnx_dynamic_size = False`` and need ``size``.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail early with a clear message)
        import onnxscript  # noqa: F401
    except ImportError:
        raise TransegError("ONNX export needs the onnx extra: pip install 'transeg[onnx]'") from None
    if opset < 17:
        raise TransegError(f"opset {opset} is too old: LayerNorm needs 17 or later")
    if size is None and not supports_dynamic_size(model):
        raise TransegError(f"{model.config.name}: its {model.config.encoder} encoder exports with a fixed input "
                           "size only; give one (transeg export --size H W)")
    if size is not None and min(size) < 32:
        raise TransegError(f"the export size must be at least 32x32, got {size[0]}x{size[1]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.randn(2, 3, *(size or (256, 256)))  # a batch of 1 would be specialised to 1
    dims = {0: torch.export.Dim("batch", min=1, max=1024)}
    if size is None:
        dims.update({axis: torch.export.Dim(name, min=32, max=8192) for axis, name in ((2, "height"), (3, "width"))})
    write_atomic(path, lambda tmp: torch.onnx.export(
        model, (example,), tmp, dynamo=True, opset_version=opset, input_names=["image"], output_names=["logits"],
        dynamic_shapes={"x": dims}, verbose=False))
    return path


def supports_dynamic_size(model: Segmentor) -> bool:
    """Whether ``model`` exports with dynamic height and width."""
    return model.onnx_dynamic_size


class OnnxSegmentor(nn.Module):
    """An ONNX Runtime session behind the Segmentor interface used for inference
    (``forward``: (B, 3, H, W) -> logits, ``config``, ``num_classes``)."""

    def __init__(self, path: str | os.PathLike[str], config, threads: int | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise TransegError("the onnx backend needs onnxruntime: pip install 'transeg[onnx]'") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.config = config

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy())})
        return torch.from_numpy(logits)
