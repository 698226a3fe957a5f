"""Wall-clock timing shared by the benchmarks: calls taken in turn, so that load coming and going on a
shared machine falls on every contender alike, and medians rather than means."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

Settings = dict[str, Callable[[], AbstractContextManager]]


def interleaved_times(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1,
                      settings: Settings | None = None) -> dict[str, list[float]]:
    """Seconds of each ``fn()`` in each of ``rounds`` rounds that call them in turn, after ``warmup``
    untimed rounds. ``settings[name]()``, where given, is a context that call runs in, entered and
    left outside the timed span (a contender's process setting, such as its heap policy)."""
    settings = settings or {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + rounds):
        for name, fn in fns.items():
            with settings.get(name, contextlib.nullcontext)():
                start = time.perf_counter()
                fn()
                seconds = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(seconds)
    return times


def interleaved_medians(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1,
                        settings: Settings | None = None) -> dict[str, float]:
    """The median seconds of each ``fn()`` over :func:`interleaved_times`."""
    return {name: statistics.median(t) for name, t in interleaved_times(fns, rounds, warmup, settings).items()}


def recording(fn: Callable[..., Any], times: list[float]) -> Callable[..., Any]:
    """``fn`` that appends the seconds of each call to ``times`` (to time a trainer's own steps)."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
        return result

    return timed


def median_step_seconds(trainer: Any) -> float:
    """Runs ``trainer.fit()`` and returns the median seconds of its ``_step`` calls after the first
    (a warm-up; the upper median for an even count): a training step's cost, to size a schedule."""
    times: list[float] = []
    trainer._step = recording(trainer._step, times)
    trainer.fit(show_progress=False)
    return sorted(times[1:])[len(times[1:]) // 2]
