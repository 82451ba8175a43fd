"""SIGINT/SIGTERM: stop the running trial cleanly on the first signal, exit at once on a second.

The first signal raises ``Interrupted`` (a KeyboardInterrupt, so Optuna records the running
trial as FAIL and re-raises it) in the main thread; the search then writes the front so far
and exits with 128 + the signal number. A second signal means "now": ``os._exit``.
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


def _exit_now(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    for sig in SIGNALS:
        signal.signal(sig, _exit_now)
    raise Interrupted(signum)


@contextmanager
def interruptible() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _interrupt) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
