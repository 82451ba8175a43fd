"""Opening the study's storage: workers that start together on a new database."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from autocompress import storage
from autocompress.errors import ConfigError
from autocompress.storage import open_storage


def open_together(url: str, workers: int) -> list[Exception]:
    """What each of ``workers`` threads got from opening ``url`` at the same moment."""
    start = threading.Barrier(workers)
    errors: list[Exception] = []

    def open_storage_on_start() -> None:
        start.wait()
        try:
            open_storage(url, heartbeat_s=1)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_storage_on_start) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_workers_opening_a_new_database_at_once_all_open_it(tmp_path: Path) -> None:
    """Without the retry each of 20 tries lost a worker to "table studies already exists"; with
    it but without turns, 8 of 40 lost one to "database is locked"."""
    for attempt in range(8):
        assert open_together(f"sqlite:///{tmp_path / f'optuna{attempt}.db'}", workers=4) == []


@pytest.mark.parametrize(
    ("error", "tries"),
    [
        ("unable to open database file", 1),  # not a creation race: reported at once
        ("(sqlite3.OperationalError) table studies already exists", storage.CREATION_RETRIES),
    ],
)
def test_an_error_is_retried_only_if_it_is_a_creation_race_and_then_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str, tries: int
) -> None:
    calls = []

    def failing(*args: object) -> None:
        calls.append(args)
        raise RuntimeError(error)

    monkeypatch.setattr(storage, "_rdb_storage", failing)
    monkeypatch.setattr(storage.time, "sleep", lambda _: None)
    with pytest.raises(ConfigError, match=rf"^storage: cannot open .*{re.escape(error)}"):
        open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_s=1)
    assert len(calls) == tries
