"""Turns on a SQLite file: one process (or thread) at a time, for the steps that SQLite cannot
run side by side however long its busy timeout.

Creating a new database's tables reads ("is the table there?") and then writes in one
transaction; when two connections do that at once, SQLite refuses the second's upgrade to a
writer at once with "database is locked" rather than wait (it would deadlock), and the loser
fails. Optuna's storage and MLflow's tracking store both create their tables on first open, so
workers started together on a new file take turns through a lock file beside it
(``<database>.lock``). Other databases lock rows on their server and need no turn.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext

from filelock import FileLock

_SQLITE_FILE = re.compile(r"^sqlite(?:\+\w+)?:///([^?]+)")


def sqlite_turn(url: str) -> AbstractContextManager[object]:
    """Held by one holder at a time per SQLite database file; a no-op for other URLs and for
    in-memory SQLite."""
    match = _SQLITE_FILE.match(url)
    if match is None or match.group(1) == ":memory:":
        return nullcontext()
    return FileLock(f"{match.group(1)}.lock")
