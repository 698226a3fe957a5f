"""benchmarks/gpu_check.sh without a GPU: the dry run finishes, runs what the CPU can and names what it
skipped (on a GPU machine the same script measures; see docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script measures it for minutes")
def test_gpu_check_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "DRY RUN: skipped creating" in result.stdout and "installing torch (CUDA)" in result.stdout
    assert "needs a CUDA GPU; this machine has none" in (tmp_path / "cuda_tests.txt").read_text()
    report = json.loads((tmp_path / "gpu_fps.json").read_text())
    assert report["dry_run"] and report["device"] == "cpu"
    ran = [r for r in report["results"] if "skipped" not in r]
    skipped = {(r["model"], r["backend"], r["precision"]): r["skipped"] for r in report["results"] if "skipped" in r}
    assert {(r["model"], r["task"]) for r in ran} == {("segformer-b0", "inference"), ("segformer-b0", "train")}
    assert all(r["images_per_s"] > 0 and "times_paper" not in r for r in ran)  # no CPU figure against a V100's
    assert skipped[("segformer-b0", "eager", "fp16")] == "fp16 autocast needs a GPU"
    assert "compile" in skipped[("segformer-b0", "compile", "fp32")]
    assert "skipped segformer-b5" in result.stdout
