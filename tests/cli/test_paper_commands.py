"""The command-line faces of the papers' experiments: eval --by-object-size (Segmenter Table 4) and
attention (Segmenter Fig. 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import transeg
from transeg.cli import cli
from transeg.data.synthetic import write_synthetic_dataset


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    write_synthetic_dataset(root / "data", num_train=2, num_val=2, size=(64, 64))
    path = root / "c.yaml"
    path.write_text(f"data: {{dataset: folder, root: {root / 'data'}, test_scale: null, num_workers: 0}}\n")
    return path


def test_eval_by_object_size_adds_the_size_buckets(config, tmp_path):
    model = transeg.save_model(transeg.create_model("segformer-b0", num_classes=6), tmp_path / "m.safetensors")
    result = run("eval", model, "--config", config, "--out", tmp_path, "--size-thresholds", 64, 512,
                 "--backend", "eager")
    assert result.exit_code == 0, result.output
    block = json.loads((tmp_path / "metrics.json").read_text())["by_object_size"]
    assert block["thresholds_px"] == [64, 512]
    assert set(block["buckets"]) == {"small", "medium", "large"}
    assert block["buckets"]["small"]["area_px"] == [0, 64] and block["buckets"]["large"]["area_px"] == [512, None]
    plain = tmp_path / "plain"
    assert run("eval", model, "--config", config, "--out", plain, "--backend", "eager").exit_code == 0
    assert "by_object_size" not in json.loads((plain / "metrics.json").read_text())


def test_attention_writes_one_map_per_head(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    result = run("attention", "segmenter-t16-mask", image, "--patch", 1, 2, "--layer", 11, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    heads = sorted(p.name for p in (tmp_path / "out").glob("head_*.png"))
    assert heads == ["head_00.png", "head_01.png", "head_02.png"]  # ViT-T: 3 heads
    assert (tmp_path / "out" / "attention.png").is_file()
    assert json.loads((tmp_path / "out" / "attention.json").read_text())["layer"] == 11


def test_attention_out_of_range_is_one_line(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    result = run("attention", "segmenter-t16-mask", image, "--patch", 0, 0, "--layer", 12, "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "layer 12 is out of range" in result.output
