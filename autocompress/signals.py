"""SIGINT/SIGTERM: stop the running trial cleanly on the first signal, exit at once on a second.

The first signal raises ``Interrupted`` (a KeyboardInterrupt, so Optuna records the running
trial as FAIL and re-raises it) in the main thread; the search then writes the front so far
and exits with 128 + the signal number. A second signal means "now": ``os._exit``.
Inside ``shielded()`` the first signal waits for the block's end: raised in the middle of a
database write, it would leave the transaction, and SQLite's lock, behind.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class _Shield:
    depth = 0
    pending: int | None = None


def _exit_now(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    for sig in SIGNALS:
        signal.signal(sig, _exit_now)
    if _Shield.depth:
        _Shield.pending = signum
        return
    raise Interrupted(signum)


@contextmanager
def shielded() -> Iterator[None]:
    """Hold a first SIGINT/SIGTERM until the block ends, then raise it (main thread only)."""
    _Shield.depth += 1
    try:
        yield
    finally:
        _Shield.depth -= 1
        if not _Shield.depth and _Shield.pending is not None:
            signum, _Shield.pending = _Shield.pending, None
            raise Interrupted(signum)


@contextmanager
def interruptible() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _interrupt) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
