"""transeg bench and info: sizes below a model's minimum are refused in one line; the ONNX backend runs."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import transeg
from transeg.analysis.bench import bench_inference, bench_train_step
from transeg.analysis.complexity import model_complexity
from transeg.cli import cli


@pytest.fixture(scope="module")
def model():
    return transeg.create_model("segformer-b0", num_classes=3)


@pytest.mark.parametrize("measure", [bench_inference, bench_train_step, model_complexity])
def test_a_size_below_the_minimum_is_refused(model, measure):
    with pytest.raises(transeg.TransegError, match=r"32x3 is below segformer-b0's minimum of 29 pixels per side"):
        measure(model, (32, 3))


@pytest.mark.parametrize("command", ["bench", "info"])
def test_the_commands_say_so_in_one_line(command):
    result = CliRunner().invoke(cli, [command, "segformer-b0", "--size", "8", "40"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: the " + ("benchmark " if command == "bench" else "") + \
        "size 8x40 is below segformer-b0's minimum of 29 pixels per side"


def test_the_onnx_backend_runs(model):
    result = bench_inference(model, (32, 32), backend="onnx", warmup=1, repeats=2)
    assert result.backend == "onnx" and result.latency_ms_median > 0
