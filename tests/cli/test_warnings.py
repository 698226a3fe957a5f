"""Warnings reach the user as one line ``warning: …`` (a skipped sample, an unusable checkpoint)."""

from __future__ import annotations

import warnings

from click.testing import CliRunner

from transeg.cli import cli


def test_a_command_prints_warnings_as_one_line(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    assert CliRunner().invoke(cli, ["list"]).exit_code == 0
    text = warnings.formatwarning("iter_9.pt: not a checkpoint\n(truncated)", UserWarning, "/x/train.py", 12)
    assert text == "warning: iter_9.pt: not a checkpoint (truncated)\n"
