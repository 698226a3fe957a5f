"""``torchrun --nproc-per-node 2 -m transeg eval|predict`` on the CPU (gloo): the processes share the
images (each once), and the metrics and files are those of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from transeg.data.synthetic import write_synthetic_dataset
from transeg.models.factory import build_model
from transeg.models.zoo import model_config
from transeg.weights.native import save_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Five validation scenes (odd: a padded sampler would repeat one), their config, a 4-class b0."""
    root = tmp_path_factory.mktemp("torchrun")
    data = write_synthetic_dataset(root / "scenes", num_train=1, num_val=5, size=(48, 64))
    config = root / "c.yaml"
    config.write_text(f"data: {{dataset: folder, root: {data}, crop_size: [48, 48], scale: [48, 64], "
                      "test_scale: null, num_workers: 0}\n")
    classes = len(yaml.safe_load((data / "classes.yaml").read_text())["classes"])
    model = root / "model.safetensors"
    save_model(build_model(model_config("segformer-b0", num_classes=classes)), model)
    return {"data": data, "config": config, "model": model}


def _run(args: list[str], processes: int, port: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "transeg"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}", f"--master-port={port}",
        "-m", "transeg"]
    return subprocess.run([*launcher, *args], env=ENV, capture_output=True, text=True, check=True, timeout=120)


def test_eval_two_processes_match_one(setup, tmp_path):
    common = ["eval", str(setup["model"]), "--config", str(setup["config"]), "--backend", "eager", "--by-object-size"]
    _run([*common, "--out", str(tmp_path / "one")], 1, 0)
    two = _run([*common, "--out", str(tmp_path / "two")], 2, 29541)
    one_metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two_metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two_metrics == one_metrics  # the confusion matrices summed over the processes: identical counts
    assert two_metrics["by_object_size"]["buckets"]  # segment counts reduced too
    assert two.stdout.count("GT pixels") == 1, "only the first process prints the table"
    # each image exactly once: the pixel total is the split's, not padded with a repeated image
    labels = [np.asarray(Image.open(p)) for p in sorted((setup["data"] / "labels" / "val").iterdir())]
    assert sum(c["gt_pixels"] for c in two_metrics["per_class"]) == sum(int((lab != 255).sum()) for lab in labels)


def test_predict_two_processes_write_each_file_once(setup, tmp_path):
    images = str(setup["data"] / "images" / "val")
    common = ["predict", str(setup["model"]), images, "--backend", "eager"]
    _run([*common, "--out", str(tmp_path / "one")], 1, 0)
    two = _run([*common, "--out", str(tmp_path / "two")], 2, 29542)
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(names) == 10
    for name in names:
        if name.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / name)),
                                  np.asarray(Image.open(tmp_path / "two" / name))), name
    said = " ".join((two.stdout + two.stderr).split())
    assert "wrote 5 label maps" in said and said.count("wrote") == 1, said
