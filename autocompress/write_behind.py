"""Writes a trial need not wait for, done in order by one background thread.

Outside fine-tuning a LeNet-300-100 trial spent about 120 ms, of which about 35 ms were MLflow
transactions on its own run (parameters and plan.json after the run is made; the file, final
metrics and end after the last epoch, docs/BENCHMARKS.md). Nothing the trial computes waits for
them, so a thread writes them while the search goes on to the next trial.

Writes run in the order they were asked for, one at a time. A failed write is raised in the
caller's thread at its next ``submit`` or ``drain``, so a broken tracking store still stops the
search, one trial later than when writes were inline. Signals reach only the main thread, so a
write here is never interrupted halfway; the interpreter's exit waits for the queue to empty,
and a killed process loses at most the writes still queued (``study._close_orphan_runs``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class WriteBehind:
    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-behind")
        self._queued: deque[Future[object]] = deque()

    def submit(self, write: Callable[[], object]) -> None:
        """Queue ``write`` behind every earlier one; first raise any earlier failure."""
        self._collect(wait=False)
        self._queued.append(self._thread.submit(write))

    def drain(self) -> None:
        """Return once every queued write is done, raising the first that failed."""
        self._collect(wait=True)

    def _collect(self, wait: bool) -> None:
        while self._queued and (wait or self._queued[0].done()):
            self._queued.popleft().result()
