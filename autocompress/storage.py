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

A trial writes each parameter and attribute in a transaction of its own (Optuna's ``Trial``
API has no batch); on a database server each commit is a round trip and a log flush.
``batched_writes`` groups the ones a trial makes together (its parameters and plan; its
results) into one transaction: 14 commits become 2, 51 -> 42 ms of a trial's writes on
PostgreSQL over loopback (on SQLite in WAL mode a commit is cheap and nothing changes). Inside
it the parameters are one insert after one look-up of the trial (Optuna's statements for the
attributes and for a parameter new to the study): 34.7 -> 30.7 ms on PostgreSQL, 21.4 -> 18.6
on SQLite (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, cast

import optuna
from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
)
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState
from sqlalchemy import insert

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
    return BatchingRDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=max(1, round(heartbeat_s)),
        grace_period=max(3, round(3 * heartbeat_s)),
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=STALE_RETRIES),
    )


Write = Callable[[Any], None]  # one of Optuna's statements, given the open session


@dataclass(frozen=True)
class _HeldParam:
    name: str
    value: float  # Optuna's internal representation
    distribution: BaseDistribution
    new_to_study: bool  # Optuna's cache knew no distribution for it


class BatchingRDBStorage(RDBStorage):
    """``RDBStorage`` whose trial parameter and user-attribute writes can be held and then
    committed together (``batch``). Only the thread that opened a batch, for its trial, is held;
    everything else writes at once, as in Optuna.

    Optuna writes each parameter as a look-up of its trial and an insert, and the look-up
    flushes the insert before it: a trial's 9 parameters were 18 statements. A batch looks the
    trial up once, checks it is still running as Optuna does, and inserts the parameters
    together (one executemany); a parameter new to the study goes through Optuna's own
    statements, which compare it with the study's other trials."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held = threading.local()

    @contextmanager
    def batch(self, trial_id: int) -> Iterator[None]:
        """Hold this thread's writes to ``trial_id`` and commit them when the block ends,
        also when it raises (what was written before an error stays written)."""
        if getattr(self._held, "trial_id", None) is not None:  # already held: one commit
            yield
            return
        self._held.trial_id, self._held.params, self._held.writes = trial_id, [], []
        try:
            yield
        finally:
            params: list[_HeldParam] = self._held.params
            writes: list[Write] = self._held.writes
            self._held.trial_id, self._held.params, self._held.writes = None, [], []
            if params or writes:
                self._commit(trial_id, params, writes)

    def _commit(self, trial_id: int, params: list[_HeldParam], writes: list[Write]) -> None:
        with _create_scoped_session(self.scoped_session, True) as session, session.no_autoflush:
            if params:
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                self.check_trial_is_updatable(trial_id, cast(TrialState, trial.state))
            rows = []
            for param in params:
                if param.new_to_study:
                    self._set_trial_param_without_commit(
                        session, trial_id, param.name, param.value, param.distribution, None
                    )
                    continue
                rows.append(
                    {
                        "trial_id": trial_id,
                        "param_name": param.name,
                        "param_value": param.value,
                        "distribution_json": distribution_to_json(param.distribution),
                    }
                )
            if rows:  # one executemany
                session.execute(insert(models.TrialParamModel), rows)
            for write in writes:
                write(session)

    def _holding(self, trial_id: int) -> bool:
        return getattr(self._held, "trial_id", None) == trial_id

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
        previous_distribution: BaseDistribution | None,
    ) -> None:
        if previous_distribution is not None:  # refused now, before Optuna's cache takes it
            check_distribution_compatibility(previous_distribution, distribution)
        if self._holding(trial_id):
            self._held.params.append(
                _HeldParam(
                    param_name, param_value_internal, distribution, previous_distribution is None
                )
            )
        else:
            super()._set_trial_param(
                trial_id, param_name, param_value_internal, distribution, previous_distribution
            )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        def write(session: Any) -> None:
            self._set_trial_attr_without_commit(
                session, models.TrialUserAttributeModel, trial_id, key, value
            )

        if self._holding(trial_id):
            self._held.writes.append(write)
        else:
            super().set_trial_user_attr(trial_id, key, value)


def _backend(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The study's storage under Optuna's ``_CachedStorage`` wrapper, if it has one."""
    return getattr(study._storage, "_backend", study._storage)


def batched_writes(trial: optuna.Trial) -> AbstractContextManager[None]:
    """The trial's parameter and attribute writes in this block, as one transaction where its
    study is stored by ``open_storage`` (else each on its own, as Optuna writes them)."""
    backend = _backend(trial.study)
    if isinstance(backend, BatchingRDBStorage):
        return backend.batch(trial._trial_id)
    return nullcontext()


def count_trials(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    """The study's trials in ``states``, every worker's: one COUNT on a relational storage,
    where Optuna's ``get_n_trials`` reads every trial (a cost that grows with the study)."""
    backend = _backend(study)
    if not isinstance(backend, RDBStorage):
        return len(study.get_trials(deepcopy=False, states=states))
    with _create_scoped_session(backend.scoped_session) as session:
        return (
            session.query(models.TrialModel)
            .filter(models.TrialModel.study_id == study._study_id)
            .filter(models.TrialModel.state.in_(states))
            .count()
        )
