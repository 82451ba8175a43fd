"""Tracker: the MLflow side of a search, on a real SQLite tracking store."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from autocompress.tracking import Tracker


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_epoch_log_holds_epochs_back_and_end_writes_them(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    parent = tracker.open_parent(None, "study")
    client = MlflowClient(tracking_uri=uri)

    held = tracker.start_trial(parent, 0, {"bits/fc1": 4}, {"layers": {}})
    epochs = tracker.epoch_log(held, every_s=3600.0)
    for epoch in (1, 2, 3):
        epochs.log({"val_accuracy": 0.5 + epoch / 10, "train_loss": 1.0 / epoch}, step=epoch)
    assert _steps(client, held, "val_accuracy") == []  # nothing written yet: one batch later
    tracker.end(held, "FINISHED", {"state": "COMPLETE"}, {"accuracy": 0.8}, epochs=epochs)
    assert _steps(client, held, "val_accuracy") == [1, 2, 3]
    assert [m.value for m in client.get_metric_history(held, "train_loss")] == [1.0, 0.5, 1 / 3]
    run = client.get_run(held)
    assert run.info.status == "FINISHED" and run.data.metrics["accuracy"] == 0.8

    live = tracker.start_trial(parent, 1, {"bits/fc1": 2}, {"layers": {}})
    epochs = tracker.epoch_log(live, every_s=0.0)  # a long trial: each epoch shows at once
    epochs.log({"val_accuracy": 0.7}, step=1)
    assert _steps(client, live, "val_accuracy") == [1]
    epochs.log({"val_accuracy": 0.6}, step=2)
    tracker.end(live, "KILLED", {"state": "PRUNED"}, epochs=epochs)
    assert _steps(client, live, "val_accuracy") == [1, 2]
    assert client.get_run(live).info.status == "KILLED"


def test_end_writes_more_than_one_batch_of_held_back_epochs(tmp_path: Path) -> None:
    """MLflow takes at most 100 metrics per batch: a long trial's held-back curve is split."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    run = tracker.start_trial(tracker.open_parent(None, "study"), 0, {}, {"layers": {}})
    epochs = tracker.epoch_log(run, every_s=3600.0)
    for epoch in range(1, 131):
        epochs.log({"val_accuracy": epoch / 200}, step=epoch)
    tracker.end(run, "FINISHED", {"state": "COMPLETE"}, {"accuracy": 0.65}, "trial-000", epochs)
    client = MlflowClient(tracking_uri=uri)
    assert _steps(client, run, "val_accuracy") == list(range(1, 131))
    finished = client.get_run(run)
    assert finished.data.metrics["accuracy"] == 0.65 and finished.data.tags["state"] == "COMPLETE"
    assert finished.info.run_name == "trial-000" and finished.info.status == "FINISHED"
