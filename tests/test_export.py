"""segformer-b0 exports (torch.export, ONNX) and the exported graph matches eager."""

from __future__ import annotations

import pytest
import torch

import transeg


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
