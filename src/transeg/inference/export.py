"""ONNX export with dynamic batch, height and width (ONNX Runtime runs it: ``inference.backends``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from transeg.errors import TransegError
from transeg.models.segmentor import Segmentor
from transeg.weights.files import write_atomic

DEFAULT_OPSET = 18
MIN_OPSET = 17  # LayerNorm as one operator
MAX_OPSET = 23  # the newest torch 2.x writes


def export_onnx(model: Segmentor, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET,
                size: tuple[int, int] | None = None) -> Path:
    """Write ``model`` as ONNX; input ``image`` (B, 3, H, W) float32, output ``logits`` (B, K, h, w).

    The batch is dynamic; so are height and width unless ``size`` fixes them. Encoders and decoders
    that do not export at dynamic sizes say so with ``onnx_dynamic_size = False`` (Swin: the exporter
    cannot handle its window arithmetic symbolically in reasonable time; UperNet: its adaptive pooling
    is specialised to the example's size), and then need ``size``.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail early with a clear message)
        import onnxscript  # noqa: F401
    except ImportError:
        raise TransegError("ONNX export needs the onnx extra: pip install 'transeg[onnx]'") from None
    if opset < MIN_OPSET:
        raise TransegError(f"opset {opset} is too old: LayerNorm needs {MIN_OPSET} or later")
    if opset > MAX_OPSET:
        raise TransegError(f"opset {opset} is too new: torch's exporter writes up to {MAX_OPSET}")
    if size is None and not model.onnx_dynamic_size:
        raise TransegError(f"{model.config.name}: its {model.fixed_size_part} exports with a fixed input "
                           "size only; give one (transeg export --size H W)")
    if size is not None and min(size) < 32:
        raise TransegError(f"the export size must be at least 32x32, got {size[0]}x{size[1]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    device = next(model.parameters()).device  # traced where the model is (the graph is the same)
    # a batch of 1 would be specialised to 1
    example = torch.randn(2, model.in_channels, *(size or (256, 256)), device=device)
    dims = {0: torch.export.Dim("batch", min=1, max=1024)}
    if size is None:
        dims.update({axis: torch.export.Dim(name, min=32, max=8192) for axis, name in ((2, "height"), (3, "width"))})
    write_atomic(path, lambda tmp: torch.onnx.export(
        model, (example,), tmp, dynamo=True, opset_version=opset, input_names=["image"], output_names=["logits"],
        dynamic_shapes={"x": dims}, verbose=False))
    return path
