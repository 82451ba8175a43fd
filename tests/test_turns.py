"""Turns: which URLs get a lock file, and that a SQLite file's turn and a study's turn on a
PostgreSQL server each admit one holder at a time."""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from pathlib import Path

import optuna
import pytest
from conftest import at_once
from filelock import FileLock, Timeout

from autocompress.study import queue_recipes
from autocompress.turns import sqlite_turn, study_turn


@pytest.mark.parametrize(
    ("url", "lock_file"),
    [
        ("sqlite:///runs/optuna.db", "runs/optuna.db.lock"),
        ("sqlite:////abs/mlflow.db", "/abs/mlflow.db.lock"),
        ("sqlite+pysqlite:////abs/optuna.db?timeout=5", "/abs/optuna.db.lock"),
    ],
)
def test_a_sqlite_file_is_locked_beside_itself(url: str, lock_file: str) -> None:
    turn = sqlite_turn(url)
    assert isinstance(turn, FileLock)
    assert turn.lock_file == lock_file


@pytest.mark.parametrize(
    "url", ["sqlite:///:memory:", "postgresql://u:p@127.0.0.1/db", "http://127.0.0.1:5000"]
)
def test_in_memory_and_server_databases_take_no_turn(url: str) -> None:
    assert isinstance(sqlite_turn(url), nullcontext)


def test_a_second_holder_waits_for_the_first(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with sqlite_turn(url):
        other = sqlite_turn(url)
        assert isinstance(other, FileLock)
        with pytest.raises(Timeout):
            other.acquire(timeout=0.05)
    with sqlite_turn(url):  # released on leaving the first turn
        pass


@pytest.mark.slow
def test_a_study_turn_on_postgres_admits_one_process_per_study(postgres: str) -> None:
    entered = threading.Event()

    def second_holder() -> None:
        with study_turn(postgres, "night"):
            entered.set()

    with study_turn(postgres, "night"):
        thread = threading.Thread(target=second_holder)
        thread.start()  # its own connection, as another process's would be
        with study_turn(postgres, "another study"):  # other studies go on meanwhile
            pass
        time.sleep(0.5)
        assert not entered.is_set()
    assert entered.wait(10)  # released on leaving the turn
    thread.join()


def queued_by_searches_at_once(storage: str, name: str, searches: int) -> list[str]:
    """The warm-start recipes of a new study after ``searches`` threads queued them at once."""
    optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"])
    recipes = [("a.yaml", {"bits/fc1": 4}), ("b.yaml", {"bits/fc1": 8})]
    studies = [optuna.load_study(study_name=name, storage=storage) for _ in range(searches)]

    def search() -> None:
        queue_recipes(studies.pop(), storage, recipes)

    assert at_once(search, workers=searches) == []
    return [
        t.user_attrs["warm_start"]
        for t in optuna.load_study(study_name=name, storage=storage).trials
    ]


@pytest.mark.slow
def test_searches_started_together_on_postgres_queue_the_recipes_once(postgres: str) -> None:
    """8 threads find a new study empty at the same moment; without the server's lock some
    queued the recipes again (skip_if_exists checks, then adds)."""
    for attempt in range(3):
        queued = queued_by_searches_at_once(postgres, f"recipes-{attempt}", searches=8)
        assert queued == ["a.yaml", "b.yaml"]
