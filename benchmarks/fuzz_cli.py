"""Fuzz the command line for a time budget and print a summary (the property of tests/cli/test_fuzz.py).

    python benchmarks/fuzz_cli.py --minutes 10

Each example is a random command with random options, values and files (tests/cli/cli_fuzzing.py);
it must end with exit code 0, or exit code 2 and one ``error:`` line, without a traceback, and
change no input. Hypothesis shrinks a failure to a minimal command, which is printed; exit code 1.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tests.cli.cli_fuzzing import build_inputs, run_example


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="time budget")
    parser.add_argument("--batch", type=int, default=10, help="examples per Hypothesis run")
    parser.add_argument("--verbose", action="store_true", help="print each example, its exit code and time")
    args = parser.parse_args()
    commands: collections.Counter[str] = collections.Counter()
    exits: collections.Counter[int] = collections.Counter()
    failures: list[str] = []
    slowest = (0.0, "")
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        inputs = build_inputs(Path(folder) / "inputs")
        work = Path(folder) / "work"
        work.mkdir()

        def announce(command: list[str]) -> None:
            print(f"running {command}", flush=True)

        @settings(max_examples=args.batch, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def check(data: st.DataObject) -> None:
            outcome = run_example(data, inputs, work, announce if args.verbose else None)
            commands[outcome.command] += 1
            exits[outcome.exit_code] += 1
            nonlocal slowest
            slowest = max(slowest, (outcome.seconds, " ".join(outcome.args)))
            if args.verbose:
                print(f"{outcome.exit_code} {outcome.seconds:6.1f} s  {outcome.args}", flush=True)
            assert outcome.problem is None, f"{outcome.args}: {outcome.problem}"

        while time.monotonic() - start < args.minutes * 60 and not failures:
            try:
                check()
            except AssertionError as exc:
                failures.append(" | ".join(str(exc).splitlines()[:4]))
    minutes = (time.monotonic() - start) / 60
    print(f"{sum(commands.values())} examples in {minutes:.1f} min; exit codes "
          + ", ".join(f"{code}: {n}" for code, n in sorted(exits.items())))
    print(f"commands covered ({len(commands)}): " + ", ".join(f"{c} {n}" for c, n in sorted(commands.items())))
    print(f"slowest example {slowest[0]:.1f} s: {slowest[1]}")
    print(f"failures: {len(failures)}")
    for failure in failures:
        print(f"  {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
