"""Inference backends behind one protocol, and the choice of the fastest for a job.

Every backend is an ``InferenceModel``: a call (B, 3, H, W) normalised float32 -> logits (B, K, h, w),
plus the model's ``config``, ``num_classes`` and ``min_input_size``. ``Segmentor`` itself is the eager backend;
``AutocastSegmentor`` runs it under bf16 or fp16 autocast; ``CompiledSegmentor`` runs it through
``torch.compile``; ``OnnxSegmentor`` runs its ONNX export in ONNX Runtime; ``Int8Segmentor`` runs an
INT8 file of ``transeg export --int8`` (``int8`` backend), built from the file alone.
``optimize_for_inference`` picks one of the others: what predict and eval use by default.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from transeg.errors import TransegError
from transeg.inference.export import export_onnx
from transeg.models.config import ModelConfig
from transeg.models.factory import model_config_from_json
from transeg.models.segmentor import Segmentor

Backend = Literal["auto", "eager", "onnx", "compile"]
Precision = Literal["fp32", "bf16", "fp16"]
BACKENDS = ("auto", "eager", "onnx", "compile")
PRECISIONS = ("fp32", "bf16", "fp16")


@runtime_checkable
class InferenceModel(Protocol):
    """What inference needs of a model, whichever backend runs it."""

    config: ModelConfig

    @property
    def num_classes(self) -> int: ...

    @property
    def min_input_size(self) -> int:
        """The smallest H and W the model runs on; inference zero-pads smaller inputs to it."""
        ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised float32 -> logits (B, K, h, w)."""
        ...


class BackendModule(nn.Module):
    """A backend wrapping a model: carries its ``config``, ``num_classes`` and ``min_input_size``."""

    def __init__(self, config: ModelConfig, min_input_size: int) -> None:
        super().__init__()
        self.config = config
        self._min_input_size = min_input_size

    @property
    def min_input_size(self) -> int:
        return self._min_input_size

    @property
    def num_classes(self) -> int:
        return self.config.num_classes


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


def onnx_cache_path(model: Segmentor) -> Path:
    """Where the ONNX export of ``model`` is (or would be) cached."""
    return _cache_dir() / f"{model.config.name}-{model_fingerprint(model)}.onnx"


def onnx_available() -> bool:
    """Whether the ``onnx`` extra (exporter and ONNX Runtime) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript", "onnxruntime"))


# ONNX Runtime saves some 30-60 ms per 512x512 image over eager (B0, 2 cores) and the export costs
# 15-30 s: it pays off from about a thousand images, or at once when the export is already cached.
ONNX_MIN_IMAGES = 1000


def autocast_dtype(precision: Precision, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``: None for fp32, bfloat16 anywhere, float16 on
    a GPU (CUDA or MPS) only: CPUs have no fast fp16 matmul, bf16 is their reduced precision."""
    if precision not in PRECISIONS:
        raise TransegError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
    if precision == "fp32":
        return None
    if precision == "fp16" and torch.device(device).type == "cpu":
        raise TransegError("fp16 inference runs on a GPU (--device cuda or mps); use --precision bf16 on the CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def resolve_backend(model: Segmentor, backend: Backend = "auto", precision: Precision = "fp32",
                    images: int | None = None, device: torch.device | str | None = None) -> str:
    """The concrete backend for a job of ``images`` images (None: open-ended, e.g. a service).

    ``auto`` is the fastest path for the job: ONNX Runtime for fp32 on the CPU when the ``onnx``
    extra is installed and the export is cached or the job repays it (``ONNX_MIN_IMAGES``), else
    eager (itself 2.5-3.5x faster than transformers' eager SegFormer, see the README). ``compile``
    is never picked by ``auto``: on the CPU it did not beat eager (benchmarks/compile_cpu.py), and
    on GPUs it is unmeasured.
    ``device`` (default: where the model's weights are) is where the job runs.
    """
    if backend not in BACKENDS:
        raise TransegError(f"unknown inference backend {backend!r} (known: {', '.join(BACKENDS)})")
    if device is None:
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    else:
        on_cpu = torch.device(device).type == "cpu"
    autocast_dtype(precision, "cpu" if on_cpu else "cuda")
    if backend == "onnx" and (precision != "fp32" or not on_cpu):
        raise TransegError("the onnx backend runs fp32 on the CPU; use --backend eager for bf16 or a GPU")
    if backend == "onnx" and not model.onnx_dynamic_size:
        raise TransegError(f"{model.config.name}: the onnx backend needs an export with dynamic sizes, which its "
                           f"{model.fixed_size_part} lacks; use eager, or `transeg export --size H W`")
    if backend != "auto":
        return backend
    if precision != "fp32" or not on_cpu or not onnx_available() or not model.onnx_dynamic_size:
        return "eager"
    repaid = images is None or images >= ONNX_MIN_IMAGES
    return "onnx" if repaid or onnx_cache_path(model).is_file() else "eager"


class AutocastSegmentor(BackendModule):
    """``model`` run under ``dtype`` autocast (bfloat16 or float16: matmuls and convolutions in it,
    reductions in fp32); returns float32 logits. (B, 3, H, W) -> (B, K, h, w)."""

    def __init__(self, model: Segmentor, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__(model.config, model.min_input_size)
        self.model = model
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, self.dtype):
            return self.model(x).float()


class CompiledSegmentor(BackendModule):
    """``model`` (a Segmentor or an ``AutocastSegmentor``) run through ``torch.compile``: the first
    call at each new input shape compiles (seconds to minutes), later ones reuse the kernels.
    (B, 3, H, W) -> (B, K, h, w)."""

    def __init__(self, model: Segmentor | AutocastSegmentor) -> None:
        super().__init__(model.config, model.min_input_size)
        self.model = model
        self.compiled = torch.compile(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.compiled(x)


class OnnxSegmentor(BackendModule):
    """An ONNX Runtime session behind the Segmentor interface used for inference
    (``forward``: (B, 3, H, W) -> logits, ``config``, ``num_classes``, and ``min_input_size``: that
    of the exported model, ``Segmentor.min_input_size``)."""

    def __init__(self, path: str | os.PathLike[str], config: ModelConfig, min_input_size: int,
                 threads: int | None = None) -> None:
        super().__init__(config, min_input_size)
        try:
            import onnxruntime as ort
        except ImportError:
            raise TransegError("the onnx backend needs onnxruntime: pip install 'transeg[onnx]'") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy())})
        return torch.from_numpy(logits)


Int8Runtime = Literal["openvino", "onnxruntime"]


def default_int8_runtime() -> Int8Runtime:
    """OpenVINO where it is installed: it runs transeg's INT8 graphs faster than ONNX Runtime on this
    project's CPU (``benchmarks/int8.py``, docs/deploy.md); else ONNX Runtime."""
    return "openvino" if importlib.util.find_spec("openvino") is not None else "onnxruntime"


class OpenVinoStatic:
    """An ONNX file run by OpenVINO on the CPU, compiled once per input shape with that shape fixed:
    static shapes let OpenVINO plan every kernel and buffer ahead, 2-3x faster than compiling the
    dynamic-shape graph for segformer-b0 and b2 at 512x512 (``benchmarks/int8.py``, docs/deploy.md).
    The ``cache`` most recent shapes stay compiled (a compile of the B0 INT8 graph: 2-2.5 s, 2 cores)."""

    def __init__(self, path: str | os.PathLike[str], threads: int, cache: int = 4) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise TransegError("the openvino INT8 runtime needs it: pip install 'transeg[openvino]'") from None
        self.core, self.path, self.threads, self.cache = ov.Core(), str(path), threads, cache
        self.requests: dict[tuple[int, ...], object] = {}

    def _request(self, shape: tuple[int, ...]):
        if shape not in self.requests:
            model = self.core.read_model(self.path)
            model.reshape(list(shape))
            compiled = self.core.compile_model(model, "CPU", {
                "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32"})
            if len(self.requests) >= self.cache:
                del self.requests[next(iter(self.requests))]
            self.requests[shape] = compiled.create_infer_request()
        self.requests[shape] = self.requests.pop(shape)  # most recently used last
        return self.requests[shape]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 -> the graph's first output, e.g. logits (B, K, h, w)."""
        return self._request(tuple(x.shape)).infer([x])[0].copy()


class Int8Segmentor(BackendModule):
    """The ``int8`` backend: a file written by ``transeg export --int8`` (without ``--embed-preprocess``),
    (B, 3, H, W) normalised float32 -> logits (B, K, h, w), run by OpenVINO (the QDQ graph read as its
    INT8 model) or ONNX Runtime: ``runtime``, else the one the file was laid out for where installed,
    else ``default_int8_runtime``. Config and ``min_input_size`` come from the file's metadata."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None,
                 runtime: Int8Runtime | None = None) -> None:
        config, least, made_for = _int8_file(path)
        super().__init__(config, least)
        installed = made_for == "onnxruntime" or importlib.util.find_spec(made_for or "-") is not None
        self.runtime = runtime or (made_for if made_for and installed else default_int8_runtime())
        threads = threads or torch.get_num_threads()
        if self.runtime == "onnxruntime":
            self._run = OnnxSegmentor(path, config, least, threads)
        elif self.runtime == "openvino":
            run = OpenVinoStatic(path, threads)
            self._run = lambda x: torch.from_numpy(run(np.ascontiguousarray(x.numpy())))
        else:
            raise TransegError(f"unknown INT8 runtime {runtime!r} (known: openvino, onnxruntime)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x.detach().cpu().float())


def _int8_file(path: str | os.PathLike[str]) -> tuple[ModelConfig, int, str | None]:
    """The config, minimum input size and intended runtime (None in older files) of a float-input INT8
    file of ``transeg export --int8``."""
    try:
        import onnx
    except ImportError:
        raise TransegError("the int8 backend needs the onnx extra: pip install 'transeg[onnx]'") from None
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx's own parse errors name no file
        raise TransegError(f"{path}: not an ONNX file ({type(exc).__name__})") from None
    meta = {prop.key: prop.value for prop in graph.metadata_props}
    if "quantization" not in meta or "transeg_config" not in meta:
        raise TransegError(f"{path}: not an INT8 model of transeg export --int8 (no quantization metadata)")
    if graph.graph.input[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise TransegError(f"{path}: takes uint8 images (--embed-preprocess); the int8 backend needs the "
                           "float-input export")
    runtime = json.loads(meta["quantization"]).get("runtime")
    return model_config_from_json(meta["transeg_config"], str(path)), int(meta["min_input_size"]), runtime


def optimize_for_inference(model: Segmentor, backend: Backend = "auto", precision: Precision = "fp32",
                           images: int | None = None,
                           on_export: Callable[[Path], None] | None = None,
                           device: torch.device | str = "cpu") -> InferenceModel:
    """The model in its inference form, same outputs within 1e-4 of the training-form module (fp32).

    ``eager``: the PyTorch module in eval mode (SegFormer's decoder runs its composed projections,
    with the BatchNorm folded in); ``onnx``: exported once with dynamic shapes (cached under
    ``$TRANSEG_CACHE`` or ``~/.cache/transeg``, keyed by the weights) and run by ONNX Runtime on the
    CPU; ``compile``: eager through ``torch.compile``; ``auto`` (the default): the faster of eager and
    onnx for a job of ``images`` images, see ``resolve_backend``. ``precision="bf16"`` (fast on CPUs
    with AVX512-BF16/AMX and on GPUs) or ``"fp16"`` (GPUs) runs under autocast. The model is moved to
    ``device``; on CUDA its weights are stored channels-last (the layout of cuDNN's fastest
    convolutions). ``on_export(path)`` is called before an export runs.
    """
    device = torch.device(device)
    model = model.eval()
    backend = resolve_backend(model, backend, precision, images, device)
    if backend in ("eager", "compile"):
        model = model.to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        dtype = autocast_dtype(precision, device)
        runner = model if dtype is None else AutocastSegmentor(model, dtype)
        return CompiledSegmentor(runner) if backend == "compile" else runner
    path = onnx_cache_path(model)
    if not path.is_file():
        if on_export is not None:
            on_export(path)
        try:
            export_onnx(model, path)
        except TransegError:
            raise
        except Exception as exc:  # the exporter's own failures are long; keep the first line
            raise TransegError(f"ONNX export of {model.config.name} failed: {exc}".splitlines()[0]) from None
    return OnnxSegmentor(path, model.config, model.min_input_size)
