"""Turns on a SQLite file: which URLs get a lock file, and that it admits one holder at a time."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from autocompress.turns import sqlite_turn


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
