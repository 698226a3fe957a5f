"""When a training loop stops: Ctrl-C between steps."""

from __future__ import annotations

import contextlib
import signal
import threading
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
