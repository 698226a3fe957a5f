"""predict writes each output atomically and ``--skip-existing`` resumes an interrupted run."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import transeg
from transeg.cli import cli
from transeg.inference import predict as files


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / name)
    model = transeg.save_model(transeg.create_model("segformer-b0", num_classes=2), folder / "m.safetensors")
    return folder, model


def predict(inputs, out, *extra):
    folder, model = inputs
    return CliRunner().invoke(cli, ["predict", str(model), *(str(folder / n) for n in ("a.png", "b.png", "c.png")),
                                    "--out", str(out), "--backend", "eager", *extra])


def test_interrupted_predict_leaves_only_whole_files_and_resumes(inputs, tmp_path, monkeypatch):
    calls = []
    real_overlay = files.overlay_with_legend

    def interrupt_on_the_second_image(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_overlay(*args, **kwargs)

    monkeypatch.setattr(files, "overlay_with_legend", interrupt_on_the_second_image)
    predict(inputs, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_overlay.jpg", "b.png"]  # no temporary file
    first = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}

    monkeypatch.setattr(files, "overlay_with_legend", real_overlay)
    result = predict(inputs, tmp_path, "--skip-existing")
    assert result.exit_code == 0, result.output
    assert "1 already there, skipped" in " ".join(result.output.split())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a.png", "a_overlay.jpg", "b.png", "b_overlay.jpg", "c.png", "c_overlay.jpg"]
    assert (tmp_path / "a.png").stat().st_mtime_ns == first["a.png"]  # done before: not written again
    assert (tmp_path / "b.png").stat().st_mtime_ns != first["b.png"]  # its overlay was missing: redone
    for name in names:
        Image.open(tmp_path / name).load()


def test_without_skip_existing_outputs_are_rewritten(inputs, tmp_path):
    assert predict(inputs, tmp_path).exit_code == 0
    (tmp_path / "a.png").write_bytes(b"stale")
    assert predict(inputs, tmp_path).exit_code == 0
    Image.open(tmp_path / "a.png").load()
    (tmp_path / "a.png").write_bytes(b"stale")
    assert predict(inputs, tmp_path, "--skip-existing").exit_code == 0
    assert (tmp_path / "a.png").read_bytes() == b"stale"


def test_output_that_would_replace_an_input_is_refused(inputs):
    folder, model = inputs
    before = (folder / "a.png").read_bytes()
    result = CliRunner().invoke(cli, ["predict", str(model), str(folder / "a.png"), "--out", str(folder)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.splitlines()) == 1, result.output
    assert "would replace the input image" in result.output
    assert (folder / "a.png").read_bytes() == before
