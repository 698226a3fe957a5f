"""The fastest inference path for a model on this machine: what predict and eval use by default."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from transeg.errors import TransegError
from transeg.models.segmentor import Segmentor

Backend = Literal["eager", "onnx"]


def _cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "transeg"
    return Path(os.environ.get("TRANSEG_CACHE") or default) / "onnx"


def model_fingerprint(model: Segmentor) -> str:
    """A digest of the config and every tensor: identical models share an exported file."""
    digest = hashlib.sha256(model.config.to_json().encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


def optimize_for_inference(model: Segmentor, backend: Backend = "eager") -> nn.Module:
    """The model in its inference form, same outputs within 1e-4 of the training-form module.

    ``eager``: the PyTorch module in eval mode (SegFormer's decoder runs its composed projections);
    ``onnx``: exported once with dynamic shapes (cached under ``$TRANSEG_CACHE`` or
    ``~/.cache/transeg``, keyed by the weights) and run by ONNX Runtime on the CPU.
    """
    model = model.eval()
    if backend == "eager":
        return model
    if backend != "onnx":
        raise TransegError(f"unknown inference backend {backend!r} (known: eager, onnx)")
    from transeg.export import OnnxSegmentor, export_onnx

    path = _cache_dir() / f"{model.config.name}-{model_fingerprint(model)}.onnx"
    if not path.is_file():
        try:
            export_onnx(model, path)
        except TransegError:
            raise
        except Exception as exc:  # the exporter's own failures are long; keep the first line
            raise TransegError(f"ONNX export of {model.config.name} failed: {exc}".splitlines()[0]) from None
    return OnnxSegmentor(path, model.config)
