"""The inference fast path gives the training-form outputs: the folded All-MLP decoder, its cache,
the backend ``auto`` picks, bf16 autocast, and the CLI default against explicit eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import transeg
from tests.conftest import randomize_batchnorm
from transeg.cli import cli
from transeg.inference import backends as optimize
from transeg.inference.backends import AutocastSegmentor, optimize_for_inference, resolve_backend


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    segmentor = transeg.create_model("segformer-b0", num_classes=5)
    with torch.no_grad():
        randomize_batchnorm(segmentor, seed=1)
    return segmentor.eval()


def reference_logits(decoder, features):
    """The training-form computation in eval mode: composed projections, BatchNorm, classifier."""
    return decoder.classifier(decoder.fused_features(features))


def test_folded_decoder_matches_the_training_form(model):
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        features = model.encoder(x)
        folded = model.decoder(features)
        expected = reference_logits(model.decoder, features)
        model.decoder.fused_projection = False
        literal = model.decoder(features)  # the paper's order, BatchNorm not folded
        model.decoder.fused_projection = True
    assert folded.shape == expected.shape == (2, 5, 24, 40)
    assert (folded - expected).abs().max() < 1e-5
    assert (folded - literal).abs().max() < 1e-5


def test_folded_weights_follow_every_change(model):
    decoder = transeg.create_model("segformer-b0", num_classes=5).decoder.eval()
    decoder.load_state_dict(model.decoder.state_dict())
    features = [torch.randn(1, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate((32, 64, 160, 256))]
    with torch.no_grad():
        first = decoder(features)
        assert decoder._folded_weights() is decoder._folded_weights()  # cached
        decoder.norm.running_var.mul_(3.0)  # a buffer changed in place
        assert (decoder(features) - reference_logits(decoder, features)).abs().max() < 1e-5
        assert (decoder(features) - first).abs().max() > 1e-3
        other = transeg.create_model("segformer-b0", num_classes=5).decoder.eval()
        randomize_batchnorm(other, seed=7)
        decoder.load_state_dict(other.state_dict())  # every tensor replaced
        assert (decoder(features) - reference_logits(other, features)).abs().max() < 1e-5


def test_folded_path_carries_gradients(model):
    """Eval mode with autograd (the ERF analysis): gradients equal the training form's."""
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    features = model.encoder(x)
    (grad_folded,) = torch.autograd.grad(model.decoder(features)[0, :, 8, 8].sum(), x)
    features = model.encoder(x)
    (grad_reference,) = torch.autograd.grad(reference_logits(model.decoder, features)[0, :, 8, 8].sum(), x)
    assert (grad_folded - grad_reference).abs().max() < 1e-5 * grad_reference.abs().max()


def test_auto_backend_pays_for_the_export_only_when_it_is_repaid(model, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSEG_CACHE", str(tmp_path))
    monkeypatch.setattr(optimize, "onnx_available", lambda: True)
    assert resolve_backend(model, "auto", "fp32", images=3) == "eager"
    assert resolve_backend(model, "auto", "fp32", images=optimize.ONNX_MIN_IMAGES) == "onnx"
    assert resolve_backend(model, "auto", "fp32", images=None) == "onnx"  # open-ended (Python users)
    assert resolve_backend(model, "auto", "bf16", images=None) == "eager"
    optimize.onnx_cache_path(model).parent.mkdir(parents=True)
    optimize.onnx_cache_path(model).touch()  # an export already cached costs nothing
    assert resolve_backend(model, "auto", "fp32", images=1) == "onnx"
    monkeypatch.setattr(optimize, "onnx_available", lambda: False)
    assert resolve_backend(model, "auto", "fp32", images=None) == "eager"
    with pytest.raises(transeg.TransegError, match="fp32 on the CPU"):
        resolve_backend(model, "onnx", "bf16")


def test_bf16_autocast_keeps_the_predictions(model):
    runner = optimize_for_inference(model, "eager", "bf16")
    assert isinstance(runner, AutocastSegmentor)
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        low, full = runner(x), model(x)
    assert low.dtype == torch.float32 and low.shape == full.shape
    assert (low.argmax(1) == full.argmax(1)).float().mean() > 0.9
    assert (low - full).abs().max() > 0  # it did run in bf16


def test_predict_default_matches_eager(model, tmp_path, monkeypatch):
    """The CLI's default backend: eager for a small job, the cached ONNX export once there is one;
    the label maps agree with explicit eager."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("TRANSEG_CACHE", str(tmp_path / "cache"))
    checkpoint = transeg.save_model(model, tmp_path / "m.safetensors")
    image = np.random.default_rng(0).integers(0, 255, (97, 131, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")

    def predict(out: str, *extra: str) -> np.ndarray:
        result = CliRunner().invoke(cli, ["predict", str(checkpoint), str(tmp_path / "x.png"), "--out",
                                          str(tmp_path / out), *extra])
        assert result.exit_code == 0, result.output
        return np.asarray(Image.open(tmp_path / out / "x.png"))

    eager = predict("eager", "--backend", "eager")
    assert (predict("default") == eager).all()  # one image: not worth an export, so eager
    assert not (tmp_path / "cache").exists()
    predict("onnx", "--backend", "onnx")  # exports and caches
    assert (predict("default-cached") == eager).mean() > 0.999  # now the cached ONNX model


def test_eval_default_and_onnx_match_eager(tmp_path, monkeypatch):
    """``transeg eval``: the default backend, explicit ONNX Runtime and bf16 against eager."""
    import json

    from transeg.data.synthetic import write_synthetic_dataset

    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("TRANSEG_CACHE", str(tmp_path / "cache"))
    write_synthetic_dataset(tmp_path / "data", num_train=1, num_val=3, size=(72, 88))
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dataset: folder, root: {tmp_path / 'data'}, test_scale: null, num_workers: 0}}\n")
    torch.manual_seed(3)
    checkpoint = transeg.save_model(transeg.create_model("segformer-b0", num_classes=6), tmp_path / "m.safetensors")

    def evaluate(name: str, *extra: str) -> dict:
        result = CliRunner().invoke(cli, ["eval", str(checkpoint), "--config", str(config), "--out",
                                          str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / name / "metrics.json").read_text())

    eager = evaluate("eager", "--backend", "eager")
    assert evaluate("default")["aAcc"] == eager["aAcc"]
    assert abs(evaluate("onnx", "--backend", "onnx")["aAcc"] - eager["aAcc"]) < 1e-3
    bf16 = evaluate("bf16", "--precision", "bf16")
    assert bf16["precision"] == "bf16" and abs(bf16["aAcc"] - eager["aAcc"]) < 0.05
