"""The training-side commands: train, eval, data check, demo (tiny settings)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from transeg.cli import cli
from transeg.data.synthetic import write_synthetic_dataset


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_synthetic_dataset(root / "data", num_train=4, num_val=2, size=(64, 64))
    path = root / "c.yaml"
    path.write_text(
        f"data: {{dataset: folder, root: {root / 'data'}, crop_size: [64, 64], scale: [64, 64], "
        f"test_scale: null, num_workers: 0}}\n"
        "schedule: {iterations: 2, warmup_iters: 1}\n"
        "train: {batch_size: 2, eval_interval: 2, checkpoint_interval: 1, log_interval: 1}\n"
        f"output_dir: {root / 'run'}\n"
    )
    return path


def test_train_then_eval_and_resume(config, tmp_path):
    result = run("train", config)
    assert result.exit_code == 0, result.output
    run_dir = config.parent / "run"
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "best.safetensors").is_file()
    result = run("eval", run_dir / "checkpoints" / "iter_0000002.pt", "--config", config, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= metrics["mIoU"] <= 1 and len(metrics["per_class"]) == 6
    assert Image.open(tmp_path / "confusion.png").size[0] > 0
    refused = run("train", config, "--resume", "--set", "schedule.iterations=3")  # another schedule
    assert refused.exit_code == 2 and "schedule.iterations: 2 -> 3" in refused.output, refused.output
    (run_dir / "checkpoints" / "iter_0000002.pt").unlink()  # as if killed after iteration 1
    resumed = run("train", config, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "iteration 2" in resumed.output
    extended = run("train", config, "--resume", "--resume-anyway", "--set", "schedule.iterations=3")
    assert extended.exit_code == 0, extended.output
    assert "iteration 3" in extended.output
    alone = run("train", config, "--resume-anyway")
    assert alone.exit_code == 2 and "--resume-anyway needs --resume" in alone.output


def test_eval_class_count_mismatch(config, tmp_path):
    result = run("eval", "segformer-b0", "--config", config)
    assert result.exit_code == 2 and "150 classes, the dataset has 6" in result.output


def test_data_check_reports_and_hints(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / split / "a.png")
        Image.fromarray(np.where(np.eye(8) > 0, 255, 0).astype(np.uint8)).save(tmp_path / "labels" / split / "a.png")
    (tmp_path / "classes.yaml").write_text("classes: [background, foreground]\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dataset: folder, root: {tmp_path}}}\n")
    result = run("data", "check", cfg, "--split", "train")
    assert "raw label values: [0, 255]" in result.output
    assert "hint:" in result.output and "label_map" in result.output


def test_train_bad_config_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {dataset: camvid, root: x}\ntrain: {batch_size: 0}\n")
    result = run("train", path)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {path}: train.batch_size: Input should be greater than 0 (got 0)"


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_training_sample_stops_or_is_skipped(tmp_path, workers):
    root = write_synthetic_dataset(tmp_path / "data", num_train=4, num_val=1, size=(64, 64))
    (root / "images" / "train" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data: {{dataset: folder, root: {root}, crop_size: [64, 64], scale: [64, 64], test_scale: null, "
        f"num_workers: {workers}, val_split: val}}\n"
        "schedule: {iterations: 3, warmup_iters: 0}\n"
        f"train: {{batch_size: 2, eval_interval: 100, checkpoint_interval: 100}}\noutput_dir: {tmp_path / 'run'}\n"
    )
    stopped = run("train", config)
    assert stopped.exit_code == 2
    errors = [line for line in stopped.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "0002.png: cannot read the image" in errors[0], stopped.output
    assert "Traceback" not in stopped.output
    skipped = run("train", config, "--on-bad-sample", "skip")
    assert skipped.exit_code == 0, skipped.output
    assert "trained to iteration 3" in skipped.output
