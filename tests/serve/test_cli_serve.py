"""``transeg serve`` refuses what it cannot serve in one line, exit code 2, before listening."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from transeg.cli import cli
from transeg.inference.backends import BACKENDS


def _serve(*args: str):
    return CliRunner().invoke(cli, ["serve", *args])


@pytest.mark.skipif("int8" in BACKENDS, reason="the int8 backend exists: serve passes it through")
def test_int8_is_refused_until_the_backend_table_has_it():
    result = _serve("segformer-b0", "--backend", "int8", "--port", "1")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: unknown inference backend 'int8' (known: auto, eager, onnx)"]


def test_a_port_in_use_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve("segformer-b0", "--backend", "eager", "--port", str(port))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}:"), result.output


def test_a_missing_model_is_one_line():
    result = _serve("nowhere/model.safetensors")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
