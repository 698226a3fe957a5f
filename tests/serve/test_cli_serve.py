"""``transeg serve`` refuses what it cannot serve in one line, exit code 2, before listening."""

from __future__ import annotations

import socket

from click.testing import CliRunner

from transeg.cli import cli


def _serve(*args: str):
    return CliRunner().invoke(cli, ["serve", *args])


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
