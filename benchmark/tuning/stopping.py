"""Interrupts: Ctrl-C or SIGTERM stops at the next epoch or trial boundary.

Running trials end FAIL, finished ones stay, a rerun resumes (exit 130). The signals only
set a flag that the objective checks between epochs and the workers between trials: an
interrupt raised in the middle of a storage write can leave an SQLite transaction open and
the store locked. A second signal to the main process interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading

STOP = threading.Event()


def request_stop(signum, frame) -> None:
    if STOP.is_set():
        raise KeyboardInterrupt
    STOP.set()


def check_stop() -> None:
    """Raise KeyboardInterrupt once a stop was asked for (at a safe point of the caller's)."""
    if STOP.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def stop_on_signals(handler=request_stop):
    """Route SIGINT and SIGTERM to `handler` (main thread only) for the block."""
    STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
