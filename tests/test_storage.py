"""Opening the study's storage: workers that start together on a new database."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from conftest import at_once
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from autocompress import storage
from autocompress.errors import ConfigError
from autocompress.storage import batched_writes, count_trials, open_storage


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


def _study_on(tmp_path: Path) -> tuple[optuna.Study, list[int]]:
    """A study on ``open_storage``'s storage, and a list that grows by one per commit."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    backend = open_storage(url, heartbeat_s=60)
    commits: list[int] = []
    sqlalchemy.event.listen(backend.engine, "commit", lambda _: commits.append(1))
    sampler = optuna.samplers.RandomSampler(seed=0)  # reads no trials (reads commit too)
    return optuna.create_study(storage=backend, study_name="s", sampler=sampler), commits


def _stored(tmp_path: Path, number: int) -> optuna.trial.FrozenTrial:
    """The trial as another process reads it from the file."""
    other = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    return other._storage.get_trial(other._storage.get_trial_id_from_study_id_trial_number(
        other._study_id, number))  # fmt: skip


def test_a_batch_commits_the_trials_parameters_and_attributes_once_at_its_end(
    tmp_path: Path,
) -> None:
    study, commits = _study_on(tmp_path)
    trial = study.ask()
    commits.clear()
    with batched_writes(trial):
        values = [trial.suggest_float(f"x{i}", 0, 1) for i in range(9)]
        trial.set_user_attr("plan", {"bits": 4})
        trial.set_user_attr("summary", "4b")
        assert trial.params == {f"x{i}": v for i, v in enumerate(values)}  # the trial's view
        assert _stored(tmp_path, 0).params == {}  # nothing on the file yet
    assert len(commits) == 1
    stored = _stored(tmp_path, 0)
    assert stored.params == {f"x{i}": v for i, v in enumerate(values)}
    assert stored.user_attrs == {"plan": {"bits": 4}, "summary": "4b"}
    assert stored.distributions["x3"] == FloatDistribution(0, 1)


def test_a_batch_looks_its_trial_up_once_and_inserts_the_parameters_together(
    tmp_path: Path,
) -> None:
    """Optuna's writes looked the trial up before every parameter (flushing the previous
    insert): 18 statements for 9 parameters. Batched: one look-up and one insert."""
    study, _ = _study_on(tmp_path)
    names = [f"x{i}" for i in range(9)]
    first = study.ask()
    with batched_writes(first):  # new to the study: Optuna's statements compare them
        for name in names:
            first.suggest_float(name, 0, 1)
    statements: list[str] = []
    engine = storage._backend(study).engine
    listener = lambda *args: statements.append(args[2].split()[0])  # noqa: E731
    trial = study.ask()
    sqlalchemy.event.listen(engine, "before_cursor_execute", listener)
    with batched_writes(trial):
        values = {name: trial.suggest_float(name, 0, 1) for name in names}
    sqlalchemy.event.remove(engine, "before_cursor_execute", listener)
    assert statements == ["SELECT", "INSERT"]
    assert _stored(tmp_path, 1).params == values
    assert _stored(tmp_path, 0).params.keys() == values.keys()


def test_writes_before_an_error_in_a_batch_are_kept_and_others_write_at_once(
    tmp_path: Path,
) -> None:
    study, _ = _study_on(tmp_path)
    trial, other = study.ask(), study.ask()
    with pytest.raises(RuntimeError, match="boom"), batched_writes(trial):
        trial.suggest_int("n", 1, 3)
        other.set_user_attr("seen", True)  # another trial: not held
        assert _stored(tmp_path, 1).user_attrs == {"seen": True}
        raise RuntimeError("boom")
    assert "n" in _stored(tmp_path, 0).params
    with batched_writes(trial):
        trial.set_user_attr("after", 1)  # the batch was closed by the error: a fresh one
    assert _stored(tmp_path, 0).user_attrs == {"after": 1}


def test_a_batch_of_an_incompatible_parameter_fails_as_optuna_does(tmp_path: Path) -> None:
    study, _ = _study_on(tmp_path)
    study.enqueue_trial({"n": 2})
    first = study.ask()
    first.suggest_int("n", 1, 3)
    study.tell(first, 0.0)
    trial = study.ask()
    with batched_writes(trial):
        with pytest.raises(ValueError, match="n"):  # at the suggestion, as Optuna refuses it
            trial.suggest_float("n", 0.0, 1.0)  # the same name, another distribution
        trial.set_user_attr("after", 1)  # the batch goes on
    assert _stored(tmp_path, 1).user_attrs == {"after": 1}
    assert count_trials(study, (TrialState.RUNNING,)) == 1
    second = study.ask()
    assert second.suggest_int("n", 1, 3) in (1, 2, 3)  # the study's distribution unchanged


def test_a_study_on_another_storage_writes_as_optuna_does() -> None:
    study = optuna.create_study()  # in memory: nothing to batch
    trial = study.ask()
    with batched_writes(trial):
        trial.set_user_attr("a", 1)
        assert study._storage.get_trial(trial._trial_id).user_attrs == {"a": 1}


def test_count_trials_counts_each_state_asked_for_every_workers_included(tmp_path: Path) -> None:
    study, _ = _study_on(tmp_path)
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE):
        study.tell(study.ask(), 1.0 if state == TrialState.COMPLETE else None, state=state)
    study.ask()  # running
    other = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    other.tell(other.ask(), state=TrialState.PRUNED)  # another worker's, after ours were read
    memory = optuna.create_study()
    memory.add_trials(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    assert count_trials(study, finished) == 4
    assert count_trials(study, (TrialState.RUNNING,)) == 1
    assert count_trials(study, (TrialState.FAIL, TrialState.WAITING)) == 1
    assert count_trials(memory, finished) == 2  # not a relational storage: Optuna's count
