"""The self-contained export (--embed-preprocess): ONNX Runtime alone, with no transeg import, gives
``transeg predict``'s labels; probabilities and metadata as documented."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import transeg
from tests.conftest import SHARED_DATA
from tests.inference.deploy_fixtures import NUM_CLASSES, scene, small_segformer
from transeg.cli import cli

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CAMVID_VAL = SHARED_DATA / "camvid" / "images" / "val"

# run in a fresh interpreter: numpy, PIL and onnxruntime only; it fails if anything imported transeg
PURE_ORT = textwrap.dedent("""
    import sys
    import numpy as np, onnxruntime as ort
    from PIL import Image
    model, out, *images = sys.argv[1:]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    labels = {}
    for i, path in enumerate(images):
        image = np.asarray(Image.open(path).convert("RGB"))
        (labels[str(i)],) = session.run(None, {"image": image[None]})
    np.savez(out, **labels)
    assert not any(name == "transeg" or name.startswith("transeg.") for name in sys.modules), "transeg imported"
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A checkpoint of the small SegFormer and its --embed-preprocess export (labels)."""
    folder = tmp_path_factory.mktemp("embed")
    checkpoint = transeg.save_model(small_segformer(), folder / "model.safetensors")
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--embed-preprocess", "--out",
                                      str(folder / "model.onnx")])
    assert result.exit_code == 0, result.output
    return checkpoint, folder / "model.onnx"


def _ort_alone_matches_predict(exported: tuple[Path, Path], images: list[Path], tmp_path: Path) -> None:
    checkpoint, model = exported
    out = tmp_path / "ort.npz"
    subprocess.run([sys.executable, "-c", PURE_ORT, str(model), str(out), *map(str, images)], check=True,
                   cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    result = CliRunner().invoke(cli, ["predict", str(checkpoint), *map(str, images), "--out", str(tmp_path / "p"),
                                      "--backend", "eager"])
    assert result.exit_code == 0, result.output
    got = np.load(out)
    for i, path in enumerate(images):
        expected = np.asarray(Image.open(tmp_path / "p" / f"{path.stem}.png"))
        labels = got[str(i)]
        assert labels.shape == (1, *expected.shape) and labels.dtype == np.uint8
        assert (labels[0] == expected).mean() > 0.9999, path  # a tie in the argmax may fall either way
        assert len(np.unique(expected)) > 1  # not a trivial constant map


def test_onnxruntime_alone_reproduces_predict(exported, tmp_path):
    """Generated images of several sizes, below the model's 29-pixel minimum included."""
    images = []
    for i, (h, w) in enumerate([(96, 128), (75, 131), (3, 40), (240, 320)]):
        images.append(tmp_path / f"scene{i}.png")
        Image.fromarray(scene(h, w, seed=i)).save(images[-1])
    _ort_alone_matches_predict(exported, images, tmp_path)


@pytest.mark.skipif(not CAMVID_VAL.is_dir(), reason="CamVid is not in shared/data")
def test_onnxruntime_alone_reproduces_predict_on_camvid(exported, tmp_path):
    images = sorted(CAMVID_VAL.iterdir())[::25][:4]
    _ort_alone_matches_predict(exported, images, tmp_path)


def test_metadata_names_classes_palette_normalisation_and_version(exported):
    import onnx

    model = onnx.load(str(exported[1]))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == ["sky", "road", "car", "tree", "sign"]
    assert json.loads(meta["palette"])[1] == [128, 64, 128]
    assert json.loads(meta["mean"]) == [123.675, 116.28, 103.53]
    assert json.loads(meta["std"]) == [58.395, 57.12, 57.375]
    assert meta["transeg_version"] == transeg.__version__
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


@pytest.mark.slow  # a second export: 15-45 s on two shared cores
def test_probs_output_is_softmax_at_input_size(tmp_path):
    import onnxruntime as ort

    from transeg.inference.embed import export_embedded
    from transeg.inference.modes import Predictor

    model = small_segformer()
    path = export_embedded(model, tmp_path / "probs.onnx", "probs")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.stack([scene(70, 90, seed=1), scene(70, 90, seed=2)])
    (probs,) = session.run(None, {"image": images})
    assert probs.shape == (2, NUM_CLASSES, 70, 90)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    predictor = Predictor(model)
    for image, p in zip(images, probs, strict=True):
        expected = predictor.predict_logits(image).softmax(1)[0].numpy()
        assert np.abs(p - expected).max() < 1e-4


def test_embed_options_refused_in_one_line(tmp_path):
    for args in (["--output", "probs"], ["--embed-preprocess", "--size", "64", "64"]):
        result = CliRunner().invoke(cli, ["export", "segformer-b0", "--out", str(tmp_path / "m.onnx"), *args])
        assert result.exit_code == 2
        assert result.output.count("\n") == 1 and result.output.startswith("error:"), result.output
