"""Killing training at random points and resuming gives the uninterrupted run's weights; writes are atomic."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import transeg
from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine import checkpoint as ckpt
from transeg.errors import TransegError


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash")
    write_synthetic_dataset(root / "data", num_train=6, num_val=1, size=(64, 64))
    path = root / "c.yaml"
    path.write_text(
        f"data: {{dataset: folder, root: {root / 'data'}, crop_size: [64, 64], scale: [64, 64], "
        "test_scale: null, num_workers: 0, val_split: null}\n"
        "optimizer: {lr: 0.001}\nschedule: {iterations: 10, warmup_iters: 2}\n"
        "train: {batch_size: 2, checkpoint_interval: 1, keep_checkpoints: 2, log_interval: 1}\n"
    )
    return path


def _train(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "transeg", "train", str(config), "--set", f"output_dir={out}",
                             *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_at_random_points_then_resume_matches(config, tmp_path):
    assert _train(config, tmp_path / "clean").wait() == 0
    rng = random.Random(0)
    out = tmp_path / "killed"
    kills = 0
    for _ in range(3):
        process = _train(config, out, "--resume")
        deadline = time.monotonic() + 120
        while not ckpt.list_checkpoints(out / "checkpoints") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 1, "the run finished before it could be killed"
    finisher = _train(config, out, "--resume")
    assert finisher.wait() == 0, finisher.stderr.read().decode()
    clean = transeg.load_model(tmp_path / "clean" / "model.safetensors").state_dict()
    resumed = transeg.load_model(out / "model.safetensors").state_dict()
    assert all(torch.equal(clean[k], resumed[k]) for k in clean)
    assert len(ckpt.list_checkpoints(out / "checkpoints")) == 2  # the last K kept
    assert not list((out / "checkpoints").glob(".iter_*")), "a partial write was left behind"


def test_sigint_saves_a_checkpoint_and_exits_cleanly(config, tmp_path):
    out = tmp_path / "interrupted"
    process = _train(config, out, "--set", "schedule.iterations=100000", "--set", "train.checkpoint_interval=100000")
    deadline = time.monotonic() + 120
    while not (out / "log.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    assert process.wait() == 2
    message = process.stderr.read().decode()
    assert "interrupted at iteration" in message and "--resume" in message
    saved = ckpt.list_checkpoints(out / "checkpoints")
    assert len(saved) == 1 and ckpt.load_checkpoint(saved[0])["iteration"] >= 1


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    first = ckpt.save_checkpoint({"iteration": 1, "model": {}}, tmp_path, 1, keep=3)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(TransegError, match="no space left to write checkpoint iter_0000002.pt"):
        ckpt.save_checkpoint({"iteration": 2, "model": {}}, tmp_path, 2, keep=3)
    assert ckpt.list_checkpoints(tmp_path) == [first]
    assert ckpt.load_checkpoint(first)["iteration"] == 1
    assert not list(tmp_path.glob(".iter_*"))


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = ckpt.save_checkpoint({"iteration": 1, "model": {"w": torch.ones(1000)}}, tmp_path, 1, keep=1)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(TransegError, match="iter_0000001.pt"):
        ckpt.load_checkpoint(path)
