"""Tracker: the MLflow side of a search, on a real SQLite tracking store."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from autocompress.tracking import Tracker


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def _trial_runs(client: MlflowClient, tracker: Tracker, number: int) -> list[Run]:
    return client.search_runs([tracker.experiment_id], filter_string=f"tags.trial = '{number}'")


def _artifact(client: MlflowClient, run_id: str, name: str, tmp_path: Path) -> bytes:
    return Path(client.download_artifacts(run_id, name, str(tmp_path))).read_bytes()


def test_a_short_trial_is_written_whole_when_it_ends(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    parent = tracker.open_parent(None, "study")
    client = MlflowClient(tracking_uri=uri)
    model = tmp_path / "trial-0000.acz"
    model.write_bytes(b"packed model")
    opened: list[str] = []

    before = int(time.time() * 1000)
    run = tracker.trial_run(
        parent, 0, {"bits/fc1": 4, "keep/fc1": 0.25}, {"layers": {"fc1": 4}}, opened.append, 3600
    )
    for epoch in (1, 2, 3):
        run.log_epoch({"val_accuracy": 0.5 + epoch / 10, "train_loss": 1.0 / epoch}, step=epoch)
    time.sleep(0.05)
    assert _trial_runs(client, tracker, 0) == [] and opened == []  # nothing written yet
    run.end("FINISHED", {"state": "COMPLETE"}, {"accuracy": 0.8}, "trial-000 9.0x 80%", [model])

    assert opened == [run.run_id]
    [written] = _trial_runs(client, tracker, 0)
    assert written.info.run_id == run.run_id and written.info.status == "FINISHED"
    assert written.info.run_name == "trial-000 9.0x 80%"
    assert before <= written.info.start_time <= written.info.end_time - 50  # the trial's start
    assert written.data.tags["mlflow.parentRunId"] == parent
    assert written.data.tags["state"] == "COMPLETE"
    assert written.data.params == {"bits/fc1": "4", "keep/fc1": "0.25"}
    assert written.data.metrics["accuracy"] == 0.8
    assert _steps(client, run.run_id, "val_accuracy") == [1, 2, 3]
    assert [m.value for m in client.get_metric_history(run.run_id, "train_loss")] == [
        1.0,
        0.5,
        1 / 3,
    ]
    assert json.loads(_artifact(client, run.run_id, "plan.json", tmp_path)) == {
        "layers": {"fc1": 4}
    }
    assert _artifact(client, run.run_id, model.name, tmp_path) == b"packed model"


def test_a_long_trial_is_written_while_it_runs_and_renamed_when_it_ends(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    client = MlflowClient(tracking_uri=uri)
    opened: list[str] = []
    run = tracker.trial_run(
        tracker.open_parent(None, "study"), 1, {"bits/fc1": 2}, {"layers": {}}, opened.append, 0.0
    )  # past open_after_s at once: each epoch shows as it ends
    run.log_epoch({"val_accuracy": 0.7}, step=1)

    assert opened == [run.run_id]
    running = client.get_run(opened[0])
    assert running.info.status == "RUNNING" and running.data.tags["state"] == "RUNNING"
    assert running.info.run_name == "trial-001" and running.data.params == {"bits/fc1": "2"}
    assert _steps(client, opened[0], "val_accuracy") == [1]
    assert json.loads(_artifact(client, opened[0], "plan.json", tmp_path)) == {"layers": {}}
    run.log_epoch({"val_accuracy": 0.6}, step=2)
    assert _steps(client, opened[0], "val_accuracy") == [1, 2]

    run.end("KILLED", {"state": "PRUNED"}, name="trial-001 stopped")
    assert opened == [run.run_id]  # opened once
    ended = client.get_run(opened[0])
    assert ended.info.status == "KILLED" and ended.data.tags["state"] == "PRUNED"
    assert ended.info.run_name == "trial-001 stopped"
    assert [r.info.run_id for r in _trial_runs(client, tracker, 1)] == opened


def test_end_writes_more_than_one_batch_of_epochs_and_parameters(tmp_path: Path) -> None:
    """MLflow takes at most 100 metrics or parameters per batch: more are split."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    params = {f"keep/layer{i}": i / 200 for i in range(130)}
    run = tracker.trial_run(tracker.open_parent(None, "study"), 0, params, {}, lambda _: None)
    for epoch in range(1, 131):
        run.log_epoch({"val_accuracy": epoch / 200}, step=epoch)
    run.end("FINISHED", {"state": "COMPLETE"}, {"accuracy": 0.65}, "trial-000")
    client = MlflowClient(tracking_uri=uri)
    assert run.run_id is not None
    assert _steps(client, run.run_id, "val_accuracy") == list(range(1, 131))
    finished = client.get_run(run.run_id)
    assert finished.data.params == {k: str(v) for k, v in params.items()}
    assert finished.data.metrics["accuracy"] == 0.65 and finished.data.tags["state"] == "COMPLETE"
    assert finished.info.run_name == "trial-000" and finished.info.status == "FINISHED"


def test_a_dead_workers_trial_gets_one_run_and_an_open_one_is_ended(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    parent = tracker.open_parent(None, "study")
    client = MlflowClient(tracking_uri=uri)
    failed = {"state": "FAIL", "fail_reason": "worker died"}

    started = int(time.time() * 1000) - 60_000  # the trial's start, a minute ago
    for _ in range(2):  # a second resumed search finds it written
        tracker.add_trial_run(parent, 3, {"bits/fc1": 4}, {"layers": {}}, failed, "FAILED", started)
    [written] = _trial_runs(client, tracker, 3)
    assert written.info.status == "FAILED" and written.data.tags["fail_reason"] == "worker died"
    assert written.info.start_time == started
    assert written.data.params == {"bits/fc1": "4"}

    # A worker died after opening its trial's run, before recording the run's id.
    opened = tracker.trial_run(parent, 4, {}, {}, lambda _: None, 0.0)
    opened.log_epoch({"val_accuracy": 0.5}, step=1)
    tracker.add_trial_run(parent, 4, {}, {}, failed, "FAILED")
    [ended] = _trial_runs(client, tracker, 4)
    assert ended.info.run_id == opened.run_id and ended.info.status == "FAILED"
    assert ended.data.tags["state"] == "FAIL"
