"""``class_weight: auto``: ENet's inverse-log weights from the training split's class pixels, counted
once per run and cached in the run directory, the same numbers ``data check`` shows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from transeg.cli import cli
from transeg.data import class_weights as data_weights
from transeg.data.datasets import build_dataset
from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.class_weights import CACHE_NAME, resolve_class_weight
from transeg.engine.loss_spec import parse_loss_spec
from transeg.engine.recipe import parse_config
from transeg.engine.train import Trainer

AUTO = parse_loss_spec([{"type": "cross_entropy", "class_weight": "auto"}])


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes"), num_train=5, num_val=2, size=(48, 48))


def test_inverse_log_weights_by_hand():
    got = data_weights.inverse_log_weights([50, 30, 20, 0])
    assert got == pytest.approx([1 / math.log(1.52), 1 / math.log(1.32), 1 / math.log(1.22), 1 / math.log(1.02)])


def test_counts_are_the_label_maps_histogram(scenes):
    dataset = build_dataset("folder", scenes, "train")
    expected = np.zeros(dataset.num_classes, dtype=np.int64)
    for path in sorted((scenes / "labels" / "train").glob("*.png")):
        values = np.asarray(Image.open(path))
        expected += np.bincount(values[values != 255].ravel(), minlength=dataset.num_classes)[: dataset.num_classes]
    assert data_weights.class_pixel_counts(dataset) == expected.tolist()


def test_counted_once_then_read_from_the_run_directory(scenes, tmp_path, monkeypatch):
    dataset = build_dataset("folder", scenes, "train")
    assert resolve_class_weight(parse_loss_spec(None), dataset, tmp_path) is None  # not asked for: no count
    assert not (tmp_path / CACHE_NAME).exists()
    weights = resolve_class_weight(AUTO, dataset, tmp_path)
    cached = json.loads((tmp_path / CACHE_NAME).read_text())
    assert cached["class_weight"] == weights == data_weights.inverse_log_weights(cached["class_pixels"])

    def no_recount(*args, **kwargs):
        raise AssertionError("counted again")

    monkeypatch.setattr("transeg.engine.class_weights.class_pixel_counts", no_recount)
    assert resolve_class_weight(AUTO, dataset, tmp_path) == weights
    cached["classes"] = ["other"] * len(cached["classes"])  # made for another dataset: counted anew
    (tmp_path / CACHE_NAME).write_text(json.dumps(cached))
    with pytest.raises(AssertionError, match="counted again"):
        resolve_class_weight(AUTO, dataset, tmp_path)


def test_trainer_and_data_check_agree(scenes, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dataset: folder, root: {scenes}, crop_size: [48, 48], scale: [48, 48], "
                      f"test_scale: null, num_workers: 0}}\nschedule: {{iterations: 2, warmup_iters: 1}}\n"
                      f"loss: [{{type: cross_entropy, class_weight: auto}}, {{type: lovasz, weight: 0.5}}]\n"
                      f"output_dir: {tmp_path / 'run'}\n")
    cfg = parse_config({"data": {"dataset": "folder", "root": str(scenes), "num_workers": 0},
                        "loss": [{"type": "cross_entropy", "class_weight": "auto"}],
                        "output_dir": str(tmp_path / "run")})
    trainer = Trainer(cfg)
    result = CliRunner().invoke(cli, ["data", "check", str(config), "--split", "train", "--json"])
    shown = json.loads(result.output.splitlines()[0])["class_weight_auto"]
    assert trainer.loss_fn.class_weight.tolist() == pytest.approx(shown)
    text = CliRunner().invoke(cli, ["data", "check", str(config), "--split", "train"]).output
    assert "class_weight auto = 1 / ln(1.02 + share of labelled)" in text
    assert f"weight {shown[0]:6.2f}" in text
