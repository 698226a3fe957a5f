"""``transeg eval`` checks labels as ``data check`` does: a 16-bit label above 255 stops the run with the
file named, or is skipped with ``--on-bad-sample skip``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import transeg
from transeg.cli import cli
from transeg.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    data = write_synthetic_dataset(root / "data", num_train=1, num_val=2, size=(32, 32))
    Image.fromarray(np.full((32, 32), 300, np.uint16)).save(data / "labels" / "val" / "0001.png")
    config = root / "c.yaml"
    config.write_text(f"data: {{dataset: folder, root: {data}, test_scale: null, num_workers: 0}}\n")
    model = transeg.save_model(transeg.create_model("segformer-b0", num_classes=6), root / "m.safetensors")
    return config, model


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_bad_label_stops_eval_naming_the_file(setup, tmp_path):
    config, model = setup
    result = run("eval", model, "--config", config, "--out", tmp_path, "--backend", "eager")
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error: ") and "0001.png" in result.output
    assert not (tmp_path / "metrics.json").exists()


def test_skip_evaluates_the_other_samples(setup, tmp_path):
    config, model = setup
    result = run("eval", model, "--config", config, "--out", tmp_path, "--backend", "eager", "--on-bad-sample", "skip")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "metrics.json").read_text())["aAcc"] is not None
