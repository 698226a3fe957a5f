"""ONNX export with dynamic batch, height and width (ONNX Runtime runs it: ``inference.backends``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from transeg.errors import TransegError
from transeg.models.segmentor import Segmentor
from transeg.version import __version__
from transeg.weights.files import write_atomic

DEFAULT_OPSET = 18
MIN_OPSET = 17  # LayerNorm as one operator
MAX_OPSET = 23  # the newest torch 2.x writes


def model_metadata(model: Segmentor) -> dict[str, str]:
    """What an exported file says about its model (ONNX ``metadata_props``): the transeg version, the
    model's name and full config (JSON), class names, palette and the mean/std of its normalisation."""
    config = model.config
    names = list(config.class_names) if config.class_names else [f"class_{i}" for i in range(model.num_classes)]
    palette = [list(c) for c in config.palette] if config.palette else None
    return {"transeg_version": __version__, "model": config.name, "transeg_config": config.to_json(),
            "classes": json.dumps(names), "palette": json.dumps(palette), "mean": json.dumps(list(config.mean)),
            "std": json.dumps(list(config.std)), "min_input_size": str(model.min_input_size)}


def check_export(model: Segmentor, opset: int, size: tuple[int, int] | None) -> None:
    """Refuse, in one line, what cannot export: no onnx extra, an opset out of range, a missing size."""
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


def write_onnx(module: nn.Module, example: torch.Tensor, path: Path, opset: int, names: tuple[str, str],
               dims: dict[int, torch.export.Dim], metadata: dict[str, str]) -> Path:
    """Export ``module(example)`` with the dynamic ``dims`` of its one input, add ``metadata`` to the
    graph's ``metadata_props`` and write the file atomically."""
    import onnx

    def write(tmp: str) -> None:
        torch.onnx.export(module, (example,), tmp, dynamo=True, opset_version=opset, input_names=[names[0]],
                          output_names=[names[1]], dynamic_shapes=[dims],
                          verbose=False)
        graph = onnx.load(tmp)
        onnx.helper.set_model_props(graph, metadata)
        onnx.save(graph, tmp)

    write_atomic(path, write)
    return path


def export_onnx(model: Segmentor, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET,
                size: tuple[int, int] | None = None) -> Path:
    """Write ``model`` as ONNX; input ``image`` (B, 3, H, W) float32, output ``logits`` (B, K, h, w).

    The batch is dynamic; so are height and width unless ``size`` fixes them. Encoders and decoders
    that do not export at dynamic sizes say so with ``onnx_dynamic_size = False`` (Swin: the exporter
    cannot handle its window arithmetic symbolically in reasonable time; UperNet: its adaptive pooling
    is specialised to the example's size), and then need ``size``. The file's metadata is
    ``model_metadata``'s.
    """
    check_export(model, opset, size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    device = next(model.parameters()).device  # traced where the model is (the graph is the same)
    # a batch of 1 would be specialised to 1
    example = torch.randn(2, model.in_channels, *(size or (256, 256)), device=device)
    dims = {0: torch.export.Dim("batch", min=1, max=1024)}
    if size is None:
        dims.update({axis: torch.export.Dim(name, min=32, max=8192) for axis, name in ((2, "height"), (3, "width"))})
    return write_onnx(model, example, path, opset, ("image", "logits"), dims, model_metadata(model))
