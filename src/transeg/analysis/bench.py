"""Latency, throughput and peak memory of a model's inference or training step."""

from __future__ import annotations

import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from transeg.engine.losses import segmentation_loss
from transeg.errors import TransegError
from transeg.inference.backends import OnnxSegmentor, autocast_dtype
from transeg.inference.export import export_onnx
from transeg.models.segmentor import Segmentor

Backend = Literal["eager", "compile", "onnx"]
Precision = Literal["fp32", "bf16", "fp16"]


@dataclass
class BenchResult:
    model: str
    task: str  # "inference" or "train"
    backend: str
    precision: str
    device: str
    threads: int
    batch: int
    size: tuple[int, int]
    repeats: int
    latency_ms_median: float
    latency_ms_min: float
    latency_ms_max: float
    images_per_s: float
    peak_memory_mb: float  # CUDA: max allocated; CPU: the process's peak resident set

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _time(run: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> list[float]:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _result(name: str, task: str, backend: str, precision: str, device: torch.device, batch: int,
            size: tuple[int, int], times: list[float]) -> BenchResult:
    median = statistics.median(times)
    return BenchResult(name, task, backend, precision, device_name(device), torch.get_num_threads(), batch,
                       tuple(size), len(times), median * 1e3, min(times) * 1e3, max(times) * 1e3,
                       batch / median, _peak_memory_mb(device))


def inference_runner(model: nn.Module, backend: Backend, example: torch.Tensor) -> nn.Module:
    """The module that runs ``model`` on the chosen backend."""
    if backend == "eager":
        return model
    if backend == "compile":
        return torch.compile(model, dynamic=False)
    if backend == "onnx":
        directory = tempfile.mkdtemp(prefix="transeg-bench-")
        path = export_onnx(model, Path(directory) / "model.onnx", size=tuple(example.shape[2:]))
        return OnnxSegmentor(path, model.config, model.min_input_size)
    raise TransegError(f"unknown backend {backend!r}")


def bench_inference(model: Segmentor, size: tuple[int, int], batch: int = 1, backend: Backend = "eager",
                    precision: Precision = "fp32", warmup: int = 3, repeats: int = 10,
                    device: torch.device | str = "cpu", channels_last: bool | None = None) -> BenchResult:
    """Inference latency on random input; ``channels_last`` (default: on CUDA, as
    ``optimize_for_inference`` runs it) stores the weights channels-last."""
    device = torch.device(device)
    if backend == "onnx" and (precision != "fp32" or device.type != "cpu"):
        raise TransegError("the onnx backend runs fp32 on the CPU")
    model.require_input_size(size, "the benchmark size")
    dtype = autocast_dtype(precision, device)
    model = model.eval().to(device)
    if channels_last is None:
        channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, *size, device=device)
    runner = inference_runner(model, backend, x)
    autocast = torch.autocast(device.type, dtype or torch.bfloat16, enabled=dtype is not None)

    def run() -> None:
        with torch.inference_mode(), autocast:
            runner(x)

    times = _time(run, device, warmup, repeats)
    return _result(model.config.name, "inference", backend, precision, device, batch, size, times)


def bench_train_step(model: Segmentor, size: tuple[int, int], batch: int = 2, precision: Precision = "fp32",
                     warmup: int = 2, repeats: int = 5, device: torch.device | str = "cpu",
                     backend: Backend = "eager") -> BenchResult:
    """Forward, loss, backward and an AdamW step on random data."""
    if backend == "onnx":
        raise TransegError("training runs on the eager or compile backend")
    device = torch.device(device)
    model.require_input_size(size, "the benchmark size")
    model = model.train().to(device)
    step_model = torch.compile(model.forward_train) if backend == "compile" else model.forward_train
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    x = torch.randn(batch, 3, *size, device=device)
    y = torch.randint(0, model.num_classes, (batch, *size), device=device)
    dtype = autocast_dtype(precision, device)
    autocast = torch.autocast(device.type, dtype or torch.bfloat16, enabled=dtype is not None)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # as training runs fp16

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = step_model(x).logits
        scaler.scale(segmentation_loss(logits, y)).backward()
        scaler.step(optimizer)
        scaler.update()

    times = _time(run, device, warmup, repeats)
    return _result(model.config.name, "train", backend, precision, device, batch, size, times)
