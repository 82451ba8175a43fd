"""SQLite in WAL mode: the study's and MLflow's databases, and what a killed writer leaves."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
from conftest import REPO
from sqlalchemy import text

from autocompress.storage import open_storage
from autocompress.tracking import Tracker


def _journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as connection:  # a plain connection: what the file itself says
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


def test_study_and_mlflow_databases_are_in_wal_mode(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_s=1)
    optuna.create_study(storage=storage, study_name="s")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path / "artifacts")
    tracker.open_parent(None, "s")
    assert _journal_mode(tmp_path / "optuna.db") == "wal"
    assert _journal_mode(tmp_path / "mlflow.db") == "wal"
    with storage.engine.connect() as connection:  # 1 = NORMAL: commits append, no fsync each
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1


KILLED_WRITER = """
import os, signal, sys
import optuna
from autocompress.storage import open_storage
study = optuna.create_study(storage=open_storage(sys.argv[1], heartbeat_s=1), study_name="s")
for x in range(3):
    trial = study.ask()
    trial.suggest_float("x", 0, 10)
    study.tell(trial, float(x))
study.set_user_attr("written", True)
os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: the log holds the commits
"""


def test_commits_survive_a_killed_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    process = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, url], env=env, capture_output=True, text=True
    )
    assert process.returncode == -9, process.stderr
    assert (tmp_path / "optuna.db-wal").stat().st_size > 0  # not yet checkpointed into the file
    study = optuna.load_study(study_name="s", storage=url)
    assert [t.value for t in study.trials] == [0.0, 1.0, 2.0]
    assert study.user_attrs["written"] is True
