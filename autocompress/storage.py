"""Optuna storage: one URL -> an RDBStorage with a heartbeat, or a one-line error.

Every relational storage (SQLite, PostgreSQL, MySQL) gets Optuna's heartbeat: a trial whose
worker stopped beating (SIGKILL, a dead machine) for ``grace`` seconds is failed by the next
worker that starts a trial, and ``RetryHeartbeatStaleTrialCallback`` queues its configuration
again. SQLite also gets a long busy timeout so several local workers wait for the file lock
instead of failing with "database is locked", and WAL mode (``autocompress.sqlite_wal``).

Workers started together on a new database race to create Optuna's tables: SQLAlchemy checks
that a table is missing, then creates it, and a second worker between the two fails with "table
already exists" (or a duplicate row in ``alembic_version``); 5 of 10 tries lost a worker with 4
started at once. On SQLite the loser can also get "database is locked" at once, whatever the
busy timeout (8 of 40 tries with 4 threads), so SQLite workers open the storage in turns
(``autocompress.turns``). On a server database, opening again sees the other worker's
tables and goes on, so a creation race is retried.
"""

from __future__ import annotations

import re
import time
import warnings

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from autocompress.errors import ConfigError
from autocompress.sqlite_wal import use_wal
from autocompress.turns import sqlite_turn

SQLITE_BUSY_TIMEOUT_S = 60
STALE_RETRIES = 2  # a configuration whose worker died twice is not tried a third time
_SCHEMES = ("sqlite", "postgresql", "mysql")
CREATION_RETRIES = 5
# What SQLite, PostgreSQL and MySQL say when another worker created a table or row first.
_CREATION_RACE = re.compile(
    r"already exists|UNIQUE constraint failed|duplicate key|Duplicate entry"
)


def redact(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(url: str, heartbeat_s: float) -> RDBStorage:
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in _SCHEMES:
        raise ConfigError(
            "storage", f"'{redact(url)}' is not a sqlite://, postgresql:// or mysql:// URL"
        )
    use_wal()
    engine_kwargs: dict[str, object] = (
        {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
        if scheme == "sqlite"
        else {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    )
    try:
        with warnings.catch_warnings():  # the heartbeat API is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            with sqlite_turn(url):
                return _rdb_storage_despite_creation_races(url, engine_kwargs, heartbeat_s)
    except ImportError as exc:  # Optuna wraps the driver's ModuleNotFoundError
        cause = exc.__cause__ if isinstance(exc.__cause__, ModuleNotFoundError) else exc
        driver = getattr(cause, "name", None) or "its database driver"
        raise ConfigError(
            "storage",
            f"'{redact(url)}' needs {driver}; for PostgreSQL: pip install 'autocompress[postgres]'",
        ) from None
    except Exception as exc:  # SQLAlchemy and driver errors: the user's URL or server
        detail = " ".join(str(exc).split())
        detail = detail.split("(Background on this error")[0].strip()
        raise ConfigError("storage", f"cannot open '{redact(url)}': {detail[:300]}") from None


def _rdb_storage_despite_creation_races(
    url: str, engine_kwargs: dict[str, object], heartbeat_s: float
) -> RDBStorage:
    for attempt in range(1, CREATION_RETRIES):
        try:
            return _rdb_storage(url, engine_kwargs, heartbeat_s)
        except Exception as exc:
            if not _CREATION_RACE.search(str(exc)):
                raise
            time.sleep(0.1 * attempt)  # the other worker finishes its few statements
    return _rdb_storage(url, engine_kwargs, heartbeat_s)


def _rdb_storage(url: str, engine_kwargs: dict[str, object], heartbeat_s: float) -> RDBStorage:
    return RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=max(1, round(heartbeat_s)),
        grace_period=max(3, round(3 * heartbeat_s)),
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=STALE_RETRIES),
    )
