"""INT8 export (--int8 --calib): the quantised graph runs, agrees with fp32, keeps the sensitive
operators float, carries its metadata, and --eval --max-drop refuses a model that loses accuracy."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import transeg
from tests.inference.deploy_fixtures import scene, small_segformer
from transeg.cli import cli
from transeg.errors import TransegError
from transeg.inference.quantize import quantize_int8

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SIZE = (96, 128)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The small SegFormer's checkpoint, 8 calibration scenes, 4 test scenes, its fp32 ONNX export and
    its INT8 form."""
    folder = tmp_path_factory.mktemp("int8")
    checkpoint = transeg.save_model(small_segformer(), folder / "model.safetensors")
    for split, count, offset in (("calib", 8, 0), ("test", 4, 100)):
        (folder / split).mkdir()
        for i in range(count):
            Image.fromarray(scene(*SIZE, seed=offset + i)).save(folder / split / f"{i}.png")
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--out", str(folder / "fp32.onnx")])
    assert result.exit_code == 0, result.output
    # what export --int8 runs after the export (the command itself: the slow tests below)
    calib = sorted((folder / "calib").iterdir())
    quantize_int8(folder / "fp32.onnx", folder / "int8.onnx", calib)
    quantize_int8(folder / "fp32.onnx", folder / "int8-ov.onnx", calib, runtime="openvino")
    return {"folder": folder, "checkpoint": checkpoint, "fp32": folder / "fp32.onnx", "int8": folder / "int8.onnx",
            "int8_ov": folder / "int8-ov.onnx"}


def _producers(model) -> dict[str, str]:
    return {out: node.op_type for node in model.graph.node for out in node.output}


def test_int8_runs_and_agrees_with_fp32(files):
    from transeg.engine.quant_eval import onnx_labeler

    fp32, int8 = onnx_labeler(files["fp32"], threads=1), onnx_labeler(files["int8"], threads=1)
    agreement = []
    for path in sorted((files["folder"] / "test").iterdir()):
        image = np.asarray(Image.open(path).convert("RGB"))
        a, b = fp32(image), int8(image)
        assert a.shape == b.shape == SIZE
        agreement.append((a == b).mean())
    assert np.mean(agreement) > 0.9, agreement
    assert np.mean(agreement) < 1.0  # really quantised: some low-margin pixels flip


def test_sensitive_operators_stay_float_and_weights_are_int8(files):
    model = onnx.load(str(files["int8"]))
    producers = _producers(model)
    initializers = {init.name for init in model.graph.initializer}
    nodes = model.graph.node
    for node in nodes:
        if node.op_type in ("LayerNormalization", "Softmax", "Erf"):
            assert all(producers.get(name) != "DequantizeLinear" for name in node.input), node.name
    weight_convs = [n for n in nodes if n.op_type in ("Conv", "MatMul")
                    and (n.input[1] in initializers or producers.get(n.input[1]) == "DequantizeLinear")]
    quantized = [n for n in weight_convs if producers.get(n.input[1]) == "DequantizeLinear"]
    assert len(quantized) == len(weight_convs) - 1  # all but the classifier
    classifier = weight_convs[-1]  # the decoder's composed classifier: a float (C, K) MatMul
    weight = next(init for init in model.graph.initializer if init.name == classifier.input[1])
    assert weight.data_type == onnx.TensorProto.FLOAT and weight.dims[-1] == 5
    attention = [n for n in nodes if n.op_type == "MatMul" and n not in weight_convs]
    assert attention and all(producers.get(i) != "DequantizeLinear" for n in attention for i in n.input)
    dq_weights = [init for init in model.graph.initializer if init.data_type == onnx.TensorProto.INT8]
    assert len(dq_weights) >= len(quantized)


def test_metadata_says_what_was_quantised(files):
    meta = {p.key: p.value for p in onnx.load(str(files["int8"]), load_external_data=False).metadata_props}
    info = json.loads(meta["quantization"])
    assert info["format"] == "QDQ" and info["calibration_images"] == 8 and len(info["kept_float"]) == 1
    assert json.loads(meta["classes"])[0] == "sky" and meta["transeg_version"] == transeg.__version__


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_backend_loads_from_the_file_alone(files, runtime):
    import torch

    if runtime == "openvino":
        pytest.importorskip("openvino")
    from transeg.inference.backends import InferenceModel, Int8Segmentor, OnnxSegmentor
    from transeg.inference.modes import normalize

    runner = Int8Segmentor(files["int8"], threads=1, runtime=runtime)
    assert isinstance(runner, InferenceModel) and runner.num_classes == 5 and runner.min_input_size == 29
    x = normalize(scene(*SIZE, seed=7), runner.config.mean, runner.config.std)
    fp32 = OnnxSegmentor(files["fp32"], runner.config, 29, threads=1)
    with torch.inference_mode():
        assert (runner(x).argmax(1) == fp32(x).argmax(1)).float().mean() > 0.9
    with pytest.raises(TransegError, match="not an INT8 model"):
        Int8Segmentor(files["fp32"])


@pytest.mark.slow  # a second export and quantisation: 20-50 s on two shared cores
def test_embedded_int8_takes_uint8_and_agrees(files, tmp_path):
    import onnxruntime as ort

    result = CliRunner().invoke(cli, ["export", str(files["checkpoint"]), "--embed-preprocess", "--int8", "--calib",
                                      str(files["folder"] / "calib"), "--out", str(tmp_path / "e.onnx")])
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    from transeg.engine.quant_eval import onnx_labeler

    fp32 = onnx_labeler(files["fp32"], threads=1)
    image = scene(*SIZE, seed=101)
    (labels,) = session.run(None, {"image": image[None]})
    assert labels.dtype == np.uint8 and (labels[0] == fp32(image)).mean() > 0.9


def _dataset_of_fp32_labels(files, root: Path) -> Path:
    """A folder dataset whose ground truth is the fp32 model's own prediction: fp32 scores 100% mIoU,
    so any INT8 disagreement is a drop."""
    from transeg.engine.quant_eval import onnx_labeler

    fp32 = onnx_labeler(files["fp32"], threads=1)
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            (root / kind / split).mkdir(parents=True)
        for i, path in enumerate(sorted((files["folder"] / "test").iterdir())):
            image = np.asarray(Image.open(path).convert("RGB"))
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            Image.fromarray(fp32(image).astype(np.uint8)).save(root / "labels" / split / f"{i}.png")
    (root / "classes.yaml").write_text("classes: [sky, road, car, tree, sign]\n")
    config = root / "config.yaml"
    config.write_text(f"data: {{dataset: folder, root: {root}, crop_size: [64, 64], test_scale: null, "
                      "val_split: val}\nmodel: {name: segformer-b0, num_classes: 5}\n")
    return config


def test_drop_beyond_max_drop_is_one_error_line(files, tmp_path, capsys):
    from transeg.cli.models import _check_drop, _eval_dataset
    from transeg.engine.recipe import load_config

    config = _dataset_of_fp32_labels(files, tmp_path / "data")
    cfg = load_config(config)
    dataset = _eval_dataset(cfg, config)
    _check_drop(files["fp32"], files["int8"], dataset, cfg, config, 100.0)  # within: passes, and reports
    with pytest.raises(TransegError) as error:
        _check_drop(files["fp32"], files["int8"], dataset, cfg, config, 0.0)
    assert str(error.value).startswith("INT8 loses") and "\n" not in str(error.value)


@pytest.mark.slow  # the whole command: export, quantisation, comparison (20-45 s)
def test_max_drop_exceeded_exits_2_with_one_line_and_writes_nothing(files, tmp_path):
    config = _dataset_of_fp32_labels(files, tmp_path / "data")
    out = tmp_path / "refused.onnx"
    result = CliRunner().invoke(cli, ["export", str(files["checkpoint"]), "--out", str(out), "--int8", "--calib",
                                      str(files["folder"] / "calib"), "--eval", str(config), "--max-drop", "0"])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: INT8 loses") and "--max-drop 0" in last, result.output
    assert "Traceback" not in result.output and not out.exists()
    assert "label agreement" in result.output and "mIoU 100.00 ->" in result.output


def test_int8_options_refused_in_one_line(tmp_path):
    for args in (["--int8"], ["--calib", str(tmp_path)], ["--int8", "--calib", str(tmp_path / "none")],
                 ["--int8-runtime", "openvino"]):
        result = CliRunner().invoke(cli, ["export", "segformer-b0", "--out", str(tmp_path / "m.onnx"), *args])
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and result.output.startswith("error:"), result.output


def test_serve_int8_answers_the_labels_of_the_int8_model(files):
    """`transeg serve FILE --backend int8`'s runner, behind the app: the label PNG is the INT8 model's."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from transeg.cli.serve import _runner
    from transeg.inference.modes import Predictor
    from transeg.serve.app import create_app

    runner, backend = _runner(str(files["int8"]), "int8", "cpu", None)
    assert backend == "int8" and runner.config.name == transeg.load_model(files["checkpoint"]).config.name
    path = sorted((files["folder"] / "test").iterdir())[0]
    expected = Predictor(runner).predict(np.asarray(Image.open(path).convert("RGB")))
    with TestClient(create_app(runner, runner.config.name, backend)) as client:
        answer = client.post("/predict", content=path.read_bytes())
    assert answer.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(answer.content))), expected)


def test_serve_int8_refuses_a_checkpoint_in_one_line(files):
    result = CliRunner().invoke(cli, ["serve", str(files["checkpoint"]), "--backend", "int8", "--port", "1"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert str(files["checkpoint"]) in result.output


def test_openvino_layout_keeps_conv_outputs_float_and_is_its_default_runtime(files):
    """runtime="openvino": the same weights quantised, but no Conv output is requantised (ONNX Runtime's
    layout requantises them, for QLinearConv); Int8Segmentor runs such a file in OpenVINO by default and it
    agrees with fp32 as the ONNX Runtime layout does."""
    import torch

    from transeg.inference.backends import Int8Segmentor, OnnxSegmentor
    from transeg.inference.modes import normalize

    consumers = {}
    for name, path in (("onnxruntime", files["int8"]), ("openvino", files["int8_ov"])):
        model = onnx.load(str(path))
        conv_outputs = {n.output[0] for n in model.graph.node if n.op_type == "Conv"}
        consumers[name] = [n.op_type for n in model.graph.node if set(n.input) & conv_outputs]
        info = json.loads({p.key: p.value for p in model.metadata_props}["quantization"])
        assert info["runtime"] == name
    assert "QuantizeLinear" in consumers["onnxruntime"] and "QuantizeLinear" not in consumers["openvino"]
    with pytest.raises(TransegError, match="unknown INT8 runtime"):
        quantize_int8(files["fp32"], files["folder"] / "x.onnx", [files["folder"] / "calib" / "0.png"], runtime="tvm")
    pytest.importorskip("openvino")
    runner = Int8Segmentor(files["int8_ov"], threads=1)
    assert runner.runtime == "openvino"
    fp32 = OnnxSegmentor(files["fp32"], runner.config, 29, threads=1)
    with torch.inference_mode():
        for seed in (7, 8):
            x = normalize(scene(*SIZE, seed=seed), runner.config.mean, runner.config.std)
            assert (runner(x).argmax(1) == fp32(x).argmax(1)).float().mean() > 0.9


def test_openvino_static_matches_onnxruntime_at_each_shape(files):
    """OpenVinoStatic compiles per input shape: fp32 logits equal ONNX Runtime's (1e-4) at three shapes,
    batch 2 included, and at most ``cache`` shapes stay compiled, the least recently used dropped first."""
    pytest.importorskip("openvino")
    import onnxruntime as ort

    from transeg.inference.backends import OpenVinoStatic

    session = ort.InferenceSession(str(files["fp32"]), providers=["CPUExecutionProvider"])
    runner = OpenVinoStatic(files["fp32"], threads=1, cache=2)
    rng = np.random.default_rng(0)
    shapes = [(1, 3, 64, 96), (2, 3, 96, 64), (1, 3, 64, 96), (1, 3, 32, 32)]
    for shape in shapes:
        x = rng.standard_normal(shape).astype(np.float32)
        expected = session.run(None, {"image": x})[0]
        np.testing.assert_allclose(runner(x), expected, atol=1e-4, rtol=1e-4)
    assert list(runner.requests) == [(1, 3, 64, 96), (1, 3, 32, 32)]
