"""SQLite in write-ahead-log mode for the study's and MLflow's databases, through SQLAlchemy's
connect event (the others that import SQLAlchemy: ``turns``, for server locks, and
``storage``, for a trial's parameters in one insert).

A trial makes about 25 small writes (Optuna's parameters, attributes and state; MLflow's run,
metrics and tags). In SQLite's default rollback-journal mode each commit waits for several
fsyncs, about 5 ms on this machine; in WAL mode with ``synchronous=NORMAL`` a commit appends to
the log and syncs only at checkpoints, under 1 ms (docs/BENCHMARKS.md). A committed write still
survives the process being killed (SIGKILL, a crash); a power loss or an OS crash can roll back
the last few commits but never corrupts the file (https://www.sqlite.org/wal.html). WAL needs
every process on one machine (shared memory), as SQLite storages already do: several machines
share a study through PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # stored in the file: kept by later openers
        cursor.execute("PRAGMA synchronous=NORMAL")  # per connection
        cursor.close()


def use_wal() -> None:
    """Every SQLite connection that any SQLAlchemy engine (Optuna's, MLflow's) opens from now
    on, in WAL mode; other databases are untouched. Idempotent."""
    if not event.contains(Engine, "connect", _on_connect):
        event.listen(Engine, "connect", _on_connect)
