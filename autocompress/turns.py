"""Turns on a file: one process (or thread) at a time, through a lock file beside it
(``<file>.lock``), for work that processes started together would otherwise do at once.

Creating a new SQLite database's tables reads ("is the table there?") and then writes in one
transaction; when two connections do that at once, SQLite refuses the second's upgrade to a
writer at once with "database is locked" rather than wait (it would deadlock), and the loser
fails. Optuna's storage and MLflow's tracking store both create their tables on first open, so
workers started together on a new file take turns. Other databases lock rows on their server
and need no turn.

A teacher not yet in the cache is trained by the first of them; the others wait for it and
load it, rather than each training the same weights into one temporary file.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from filelock import FileLock

_SQLITE_FILE = re.compile(r"^sqlite(?:\+\w+)?:///([^?]+)")


def file_turn(path: Path | str) -> FileLock:
    """Held by one holder at a time per ``path``."""
    return FileLock(f"{path}.lock")


def sqlite_turn(url: str) -> AbstractContextManager[object]:
    """``file_turn`` of a SQLite database's file; a no-op for other URLs and for in-memory
    SQLite."""
    match = _SQLITE_FILE.match(url)
    if match is None or match.group(1) == ":memory:":
        return nullcontext()
    return file_turn(match.group(1))
