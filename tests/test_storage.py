"""Opening the study's storage: workers that start together on a new database."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import pytest
from conftest import at_once

from autocompress import storage
from autocompress.errors import ConfigError
from autocompress.storage import open_storage


def test_workers_opening_a_new_database_at_once_all_open_it(tmp_path: Path) -> None:
    """Without the retry each of 20 tries lost a worker to "table studies already exists"; with
    it but without turns, 8 of 40 lost one to "database is locked"."""
    for attempt in range(8):
        url = f"sqlite:///{tmp_path / f'optuna{attempt}.db'}"
        assert at_once(partial(open_storage, url, heartbeat_s=1), workers=4) == []


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
