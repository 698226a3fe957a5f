"""The command line under random commands, options, values and files (``cli_fuzzing``): every run ends
with exit code 0, or exit code 2 and one ``error:`` line, never a traceback, and changes no input.
A short run here; ``benchmarks/fuzz_cli.py --minutes 10`` runs it on a time budget."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli.cli_fuzzing import build_inputs, run_example


def test_cli_never_shows_a_traceback_nor_changes_an_input(tmp_path_factory):
    inputs = build_inputs(tmp_path_factory.mktemp("fuzz-inputs"))
    work = tmp_path_factory.mktemp("fuzz-work")

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data: st.DataObject) -> None:
        outcome = run_example(data, inputs, work)
        assert outcome.problem is None, f"{outcome.args}: {outcome.problem}\n{outcome.output}"

    check()
