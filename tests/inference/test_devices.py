"""Devices and precisions for inference, checked on the CPU: autocast dtype selection, backend choice
by device, the torch.compile backend, and --device on every command that runs a model."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from transeg.cli import cli
from transeg.engine.distributed import distributed_job, init_distributed
from transeg.errors import TransegError
from transeg.inference.backends import (
    AutocastSegmentor,
    CompiledSegmentor,
    autocast_dtype,
    optimize_for_inference,
    resolve_backend,
)
from transeg.models.factory import build_model
from transeg.models.zoo import model_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(model_config("segformer-b0", num_classes=3)).eval()


def test_autocast_dtype_by_precision_and_device():
    assert autocast_dtype("fp32", "cpu") is None and autocast_dtype("fp32", "cuda") is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16 and autocast_dtype("bf16", "cuda:1") is torch.bfloat16
    assert autocast_dtype("fp16", "cuda") is torch.float16 and autocast_dtype("fp16", "mps") is torch.float16
    with pytest.raises(TransegError, match="fp16 inference runs on a GPU"):
        autocast_dtype("fp16", "cpu")
    with pytest.raises(TransegError, match="unknown precision 'int4'"):
        autocast_dtype("int4", "cpu")


def test_backend_choice_follows_the_device(model):
    assert resolve_backend(model, "auto", "fp32", images=1, device="cuda") == "eager"  # ONNX Runtime: CPU only
    assert resolve_backend(model, "auto", "fp16", images=10**6, device="cuda") == "eager"
    assert resolve_backend(model, "compile", "fp32", device="cpu") == "compile"
    with pytest.raises(TransegError, match="onnx backend runs fp32 on the CPU"):
        resolve_backend(model, "onnx", "fp32", device="cuda")
    with pytest.raises(TransegError, match="fp16 inference runs on a GPU"):
        resolve_backend(model, "eager", "fp16", device="cpu")


def test_bf16_runner_carries_its_dtype_and_matches_fp32_labels(model):
    runner = optimize_for_inference(model, "eager", "bf16", device="cpu")
    assert isinstance(runner, AutocastSegmentor) and runner.dtype is torch.bfloat16
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        agree = (runner(x).argmax(1) == model(x).argmax(1)).float().mean().item()
    assert agree > 0.9


@pytest.mark.slow  # inductor compiles C++ kernels on the CPU: a minute on two cores
def test_compile_backend_matches_eager(model):
    runner = optimize_for_inference(model, "compile", "fp32", device="cpu")
    assert isinstance(runner, CompiledSegmentor) and runner.num_classes == 3
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(runner(x), model(x), atol=1e-4)


def test_one_process_job_on_the_cpu():
    with distributed_job("cpu") as info:
        assert info.world_size == 1 and info.device == torch.device("cpu")
    assert init_distributed("cpu").device.type == "cpu"


# every command that runs a model, with the arguments it needs before --device
COMMANDS = {
    "predict": ["predict", "segformer-b0", "x.png", "--out", "o"],
    "eval": ["eval", "segformer-b0", "--config", "c.yaml"],
    "bench": ["bench", "segformer-b0"],
    "export": ["export", "segformer-b0", "--out", "m.onnx"],
    "robustness": ["robustness", "segformer-b0", "--dataset", "camvid", "--data-root", ".", "--out", "o"],
    "erf": ["erf", "segformer-b0", "x.png", "--out", "o"],
    "attention": ["attention", "segmenter-vit-t", "x.png", "--patch", "0", "0", "--out", "o"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("device", ["cuda:7", "gpu", "cpu:1"])
def test_every_model_command_refuses_an_unavailable_device_in_one_line(command, device, tmp_path, monkeypatch):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, [*COMMANDS[command], "--device", device])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--device" in lines[0] and device in lines[0]
