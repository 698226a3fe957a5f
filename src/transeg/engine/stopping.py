"""When a training loop stops: its iteration budget, its wall-time limit, or Ctrl-C between steps."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator


@contextlib.contextmanager
def interrupt_flag() -> Iterator[threading.Event]:
    """An Event set by Ctrl-C (SIGINT) for the duration: the loop stops between steps. A
    KeyboardInterrupt raised at an arbitrary point can be swallowed (inside a finaliser or a C++
    callback), and would then be lost. Off the main thread nothing is installed."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


class Stopping:
    """The loop's three ends: the iteration budget is spent; the wall-time limit (counted from
    construction) has passed, a normal end with a reason; or ``interrupted`` is set, which becomes a
    KeyboardInterrupt at the next step boundary."""

    def __init__(self, iterations: int, time_limit_minutes: float | None, interrupted: threading.Event) -> None:
        self.iterations = iterations
        self.time_limit_minutes = time_limit_minutes
        self.interrupted = interrupted
        self._start = time.monotonic()

    def budget_left(self, iteration: int) -> bool:
        return iteration < self.iterations

    def raise_if_interrupted(self) -> None:
        if self.interrupted.is_set():
            raise KeyboardInterrupt

    def time_limit_reached(self) -> str | None:
        """Why to stop once the time limit has passed; None before it, or without one."""
        limit = self.time_limit_minutes
        if limit is not None and time.monotonic() - self._start > limit * 60:
            return f"time limit of {limit} minutes"
        return None
