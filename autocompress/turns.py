"""Turns on a file: one process (or thread) at a time, through a lock file beside it
(``<file>.lock``), for work that processes started together would otherwise do at once.

Creating a new SQLite database's tables reads ("is the table there?") and then writes in one
transaction; when two connections do that at once, SQLite refuses the second's upgrade to a
writer at once with "database is locked" rather than wait (it would deadlock), and the loser
fails. Optuna's storage and MLflow's tracking store both create their tables on first open, so
workers started together on a new file take turns. Other databases lock rows on their server
and need no turn for that.

Searches started together on one new study also each ask "is the study new?" before queueing
the warm-start recipes and creating the study's MLflow parent run. On SQLite they take turns on
the study's file; on PostgreSQL and MySQL, where searches on several machines share the study,
on a lock of the database server itself (``study_turn``: an advisory lock, released when its
connection closes, so a killed holder cannot leave it held).

A teacher not yet in the cache is trained by the first of them; the others wait for it and
load it, rather than each training the same weights into one temporary file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from filelock import FileLock
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

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


def study_turn(storage_url: str, study_name: str) -> AbstractContextManager[object]:
    """Held by one process at a time per study among all that share its storage: the SQLite
    file's turn, or an advisory lock on the PostgreSQL or MySQL server named for the study."""
    if storage_url.startswith("sqlite"):
        return sqlite_turn(storage_url)
    return _server_lock(storage_url, f"autocompress study {study_name}")


@contextmanager
def _server_lock(url: str, name: str) -> Iterator[None]:
    """``pg_advisory_lock`` (a 64-bit key) or MySQL's ``GET_LOCK`` (a name of at most 64
    characters), both hashed from ``name``, on a connection of its own: the server releases
    the lock when the connection ends, whatever becomes of this process."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    engine = create_engine(url, poolclass=NullPool)
    try:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            if engine.dialect.name == "postgresql":
                key: int | str = int.from_bytes(digest, "big", signed=True)
                take, release = "SELECT pg_advisory_lock(%s)", "SELECT pg_advisory_unlock(%s)"
            else:  # mysql
                key = f"autocompress-{digest.hex()}"
                take, release = "SELECT GET_LOCK(%s, -1)", "SELECT RELEASE_LOCK(%s)"
            cursor.execute(take, (key,))
            cursor.fetchall()
            connection.commit()  # session-level lock: no transaction is kept open meanwhile
            try:
                yield
            finally:
                cursor.execute(release, (key,))
                cursor.fetchall()
                connection.commit()
        finally:
            connection.close()
    finally:
        engine.dispose()
