"""The GPU paths, run where there is a CUDA GPU (``benchmarks/gpu_check.sh``) and skipped elsewhere:
mixed-precision training steps, SyncBatchNorm, slide and ms-flip inference, fp16/bf16 autocast,
channels-last, torch.compile and ONNX Runtime's CUDA provider, each against its CPU or fp32 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from click.testing import CliRunner
from PIL import Image
from torch import nn

from tests.engine.test_train_precision import scenes, trained_step  # noqa: F401  (scenes: a fixture)
from transeg.cli import cli
from transeg.engine.distributed import DistInfo, convert_batchnorm
from transeg.inference.backends import CompiledSegmentor, optimize_for_inference
from transeg.inference.modes import Predictor
from transeg.models.factory import build_model
from transeg.models.zoo import model_config

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(model_config("segformer-b0", num_classes=5)).eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_training_steps_on_the_gpu(scenes, tmp_path, precision):  # noqa: F811
    trainer, before = trained_step(scenes, tmp_path, precision)
    assert trainer.info.device.type == "cuda" and next(trainer.model.parameters()).is_cuda
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


def test_syncbatchnorm_conversion_matches_batchnorm_in_one_process(tmp_path, model):
    """torch's SyncBatchNorm replaces BatchNorm on CUDA and trains like it in a one-process NCCL group.
    (Its cross-process reduction needs two GPUs: NCCL refuses two ranks on one device.)"""
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        plain = build_model(model_config("segformer-b0", num_classes=5)).cuda().train()
        synced = build_model(model_config("segformer-b0", num_classes=5)).cuda().train()
        synced.load_state_dict(plain.state_dict())
        synced = convert_batchnorm(synced, DistInfo(rank=0, world_size=2, device=torch.device("cuda")))
        assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
        x = torch.randn(2, 3, 64, 64, device="cuda")
        torch.manual_seed(1)
        expected = plain.forward_train(x).logits
        torch.manual_seed(1)
        got = synced.forward_train(x).logits
        assert torch.allclose(got, expected, atol=1e-4)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("options", [{"mode": "slide", "crop": 128, "stride": 96},
                                     {"mode": "ms-flip", "scales": (0.75, 1.0, 1.25)}], ids=["slide", "ms-flip"])
def test_slide_and_ms_flip_on_the_gpu_match_the_cpu(model, image, options):
    gpu_model = build_model(model.config).eval()
    gpu_model.load_state_dict(model.state_dict())
    cpu = Predictor(model, **options).predict_logits(image)
    gpu = Predictor(gpu_model, device="cuda", **options).predict_logits(image)
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-3)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_inference_on_the_gpu_agrees_with_fp32(model, image, precision):
    reference = Predictor(model).predict(image)
    runner = optimize_for_inference(build_model(model.config).eval(), "eager", precision, device="cuda")
    runner.model.load_state_dict(model.state_dict())
    conv = next(m for m in runner.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert (Predictor(runner, device="cuda").predict(image) == reference).mean() > 0.98


def test_compile_backend_on_the_gpu_matches_eager(model):
    eager = build_model(model.config).eval().cuda()
    eager.load_state_dict(model.state_dict())
    runner = optimize_for_inference(eager, "compile", "fp32", device="cuda")
    assert isinstance(runner, CompiledSegmentor)
    x = torch.randn(2, 3, 128, 128, device="cuda")
    with torch.inference_mode():
        assert torch.allclose(runner(x), eager(x), atol=1e-3)


def test_onnx_on_the_gpu_matches_torch(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (no CUDAExecutionProvider)")
    from transeg.inference.export import export_onnx

    path = export_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
    x = torch.randn(2, 3, 128, 160)
    (got,) = session.run(None, {"image": x.numpy()})
    with torch.inference_mode():
        expected = model(x)
    assert np.allclose(got, expected.numpy(), atol=1e-3)


def test_predict_command_on_the_gpu(tmp_path, image):
    Image.fromarray(image).save(tmp_path / "a.png")
    for device in ("cpu", "cuda"):
        result = CliRunner().invoke(cli, ["predict", "segformer-b0", str(tmp_path / "a.png"), "--num-classes", "4",
                                          "--out", str(tmp_path / device), "--backend", "eager", "--device", device])
        assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "cuda" / "a.png").size == (300, 200)
