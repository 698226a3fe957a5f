"""segformer-b0 exports (torch.export, ONNX) and the exported graph matches eager."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import transeg
from transeg.inference.backends import resolve_backend
from transeg.inference.export import export_onnx
from transeg.models.factory import build_model
from transeg.models.zoo import model_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return transeg.create_model("segformer-b0", num_classes=7).eval()


def test_torch_export_matches_eager(model):
    x = torch.randn(1, 3, 160, 224)
    exported = torch.export.export(model, (x,))
    with torch.inference_mode():
        assert (exported.module()(x) - model(x)).abs().max() < 1e-5


def test_onnx_export_matches_eager(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = tmp_path / "b0.onnx"
    x = torch.randn(2, 3, 128, 192)  # an example batch of 1 would be specialised to 1
    batch = torch.export.Dim("batch", min=1, max=64)
    height, width = (torch.export.Dim(n, min=64, max=4096) for n in ("height", "width"))
    torch.onnx.export(model, (x,), str(path), dynamo=True,
                      dynamic_shapes={"x": {0: batch, 2: height, 3: width}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 128, 192), (3, 3, 97, 161), (1, 3, 375, 500)]:
        y = torch.randn(*shape)
        (got,) = session.run(None, {session.get_inputs()[0].name: y.numpy()})
        with torch.inference_mode():
            expected = model(y)
        assert got.shape == tuple(expected.shape)
        assert abs(got - expected.numpy()).max() < 1e-4


def test_export_command_and_onnx_segmentor_match_eager(model, tmp_path):
    from click.testing import CliRunner

    from transeg.cli import cli
    from transeg.inference.backends import OnnxSegmentor

    checkpoint = transeg.save_model(model, tmp_path / "m.safetensors")
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--opset", "18"])
    assert result.exit_code == 0, result.output
    runner = OnnxSegmentor(tmp_path / "m.onnx", model.config, model.min_input_size)
    for shape in [(1, 3, 96, 96), (2, 3, 75, 131), (1, 3, 333, 250)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            assert (runner(x) - model(x)).abs().max() < 1e-4, shape


def test_export_rejects_old_opset(model, tmp_path):
    from transeg.inference.export import export_onnx

    with pytest.raises(transeg.TransegError, match="opset 13 is too old"):
        export_onnx(model, tmp_path / "m.onnx", opset=13)


def test_bench_command_reports_the_setting():
    import json

    from click.testing import CliRunner

    from transeg.cli import cli

    for extra in ([], ["--train", "--batch", "2"]):
        result = CliRunner().invoke(cli, ["bench", "segformer-b0", "--size", "64", "64", "--repeats", "2",
                                          "--warmup", "1", "--threads", "2", "--json", *extra])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["task"] == ("train" if extra else "inference")
        assert report["threads"] == 2 and report["size"] == [64, 64] and report["precision"] == "fp32"
        assert report["latency_ms_min"] <= report["latency_ms_median"] <= report["latency_ms_max"]
        assert report["images_per_s"] > 0 and report["peak_memory_mb"] > 0


def test_predict_with_the_onnx_backend_matches_eager(model, tmp_path, monkeypatch):
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from transeg.cli import cli

    monkeypatch.setenv("TRANSEG_CACHE", str(tmp_path / "cache"))
    checkpoint = transeg.save_model(model, tmp_path / "m.safetensors")
    image = np.random.default_rng(0).integers(0, 255, (77, 103, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    for backend in ("eager", "onnx", "onnx"):  # the second onnx run reuses the cached export
        result = CliRunner().invoke(cli, ["predict", str(checkpoint), str(tmp_path / "x.png"), "--out",
                                          str(tmp_path / backend), "--backend", backend])
        assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1
    eager = np.asarray(Image.open(tmp_path / "eager" / "x.png"))
    onnx = np.asarray(Image.open(tmp_path / "onnx" / "x.png"))
    assert (eager == onnx).mean() > 0.999


def _onnx_matches_eager(model, tmp_path, shapes, size=None):
    from transeg.inference.backends import OnnxSegmentor
    from transeg.inference.export import export_onnx

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    runner = OnnxSegmentor(export_onnx(model.eval(), tmp_path / "m.onnx", size=size), model.config,
                           model.min_input_size)
    for shape in shapes:
        x = torch.randn(*shape)
        with torch.inference_mode():
            expected = model(x)
            got = runner(x)
        assert got.shape == expected.shape, shape
        assert (got - expected).abs().max() < 1e-4, shape


def test_segmenter_onnx_matches_eager_at_odd_sizes(tmp_path):
    from tests.models.test_segmenter import tiny_segmenter

    _onnx_matches_eager(tiny_segmenter(), tmp_path, [(1, 3, 64, 96), (2, 3, 75, 131), (1, 3, 97, 50)])


@pytest.mark.parametrize("name", ["segdeformer-mit-b0-eff", "segdeformer-mit-b0"])  # b0: Eq. 7 through the tokens
def test_segdeformer_onnx_matches_eager_at_odd_sizes(tmp_path, name):
    config = model_config(name, num_classes=4)  # one block per stage: the head is what is exported here
    config = dataclasses.replace(config, encoder_config=dataclasses.replace(config.encoder_config, depths=(1, 1, 1, 1)))
    torch.manual_seed(0)
    model = build_model(config)
    _onnx_matches_eager(model, tmp_path, [(1, 3, 64, 96), (2, 3, 75, 131), (1, 3, 97, 50)])


def test_swin_exports_at_a_fixed_size_only(tmp_path):
    from tests.models.test_swin import tiny_swin
    from transeg.inference.export import export_onnx

    model = tiny_swin()
    with pytest.raises(transeg.TransegError, match="fixed input size only"):
        export_onnx(model, tmp_path / "dynamic.onnx")
    with pytest.raises(transeg.TransegError, match="dynamic sizes"):
        transeg.optimize_for_inference(model, "onnx")
    _onnx_matches_eager(model, tmp_path, [(1, 3, 75, 101), (3, 3, 75, 101)], size=(75, 101))


@pytest.mark.parametrize("name", ["upernet-mit-b2", "segdeformer-deit-s16-uper", "upernet-swin-t"])
def test_upernet_fusion_declares_a_fixed_export_size(name, tmp_path):
    """UperNet's pyramid pooling exports specialised to the example's size, so models with it declare a
    fixed size: export without one, and the onnx backend, refuse with a message naming the part."""
    model = build_model(model_config(name, num_classes=4))
    assert not model.onnx_dynamic_size
    part = "swin encoder" if "swin" in name else f"{model.config.decoder} decoder"
    with pytest.raises(transeg.TransegError, match=f"its {part} exports with a fixed input size only"):
        export_onnx(model, tmp_path / "dynamic.onnx")
    assert resolve_backend(model, "auto") == "eager"  # an open-ended job on the CPU picks onnx when it can
    with pytest.raises(transeg.TransegError, match=f"{part} lacks"):
        resolve_backend(model, "onnx")


def test_models_without_upernet_export_at_dynamic_sizes():
    with torch.device("meta"):
        for name in ("segformer-b0", "segmenter-t16-mask", "segdeformer-mit-b0", "mla-mit-b2"):
            assert build_model(model_config(name, num_classes=4)).onnx_dynamic_size, name
    assert resolve_backend(build_model(model_config("segformer-b0", num_classes=4)), "auto") == "onnx"
