"""Wall-clock timing shared by the benchmarks: calls taken in turn, so that load coming and going on a
shared machine falls on every contender alike, and medians rather than means."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from transeg.engine import heap

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


@contextlib.contextmanager
def heap_policy(retain: bool) -> Iterator[None]:
    """One contender's heap when contenders take turns in one process (glibc; elsewhere nothing):
    ``retain``, large blocks from the heap as in transeg's trainer (``engine/heap.py``); otherwise
    glibc's own way, a fresh mapping for every block above the 32 MiB its threshold adapts to, unless
    a free block of the heap fits (then it is reused, as glibc would). The heap is never trimmed, so
    no contender hands another's freed memory back to the kernel. Run the contest inside
    ``engine.heap.retained_heap()``, which restores glibc's defaults at its end."""
    libc = heap.glibc()
    if libc is not None:
        libc.mallopt(heap.M_MMAP_MAX, 0 if retain else heap.DEFAULT_MMAP_MAX)
        libc.mallopt(heap.M_MMAP_THRESHOLD, heap.ADAPTED_MMAP_THRESHOLD)
        libc.mallopt(heap.M_TRIM_THRESHOLD, heap.RETAINED_TRIM_THRESHOLD)
    yield


def recording(fn: Callable[..., Any], times: list[float]) -> Callable[..., Any]:
    """``fn`` that appends the seconds of each call to ``times`` (to time a trainer's own steps)."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
        return result

    return timed


def median_step_seconds(trainer: Any, warmup: int = 1) -> float:
    """Runs ``trainer.fit()`` and returns the median seconds of its ``_step`` calls after the first
    ``warmup`` (the loader filling its queue, the heap growing; the upper median for an even count):
    a training step's cost, to size a schedule."""
    times: list[float] = []
    trainer._step = recording(trainer._step, times)
    trainer.fit(show_progress=False)
    steady = times[warmup:]
    return sorted(steady)[len(steady) // 2]
