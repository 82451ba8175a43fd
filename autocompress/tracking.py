"""MLflow logging: the only module that imports mlflow.

Everything goes through ``MlflowClient`` with explicit run ids, never the fluent API, whose
active run is per thread and per process: a resumed search (or another worker) finds the
study's parent run by the id kept on the Optuna study and adds its trial runs under it.

Processes that open one SQLite tracking database take turns (``autocompress.turns``):
MLflow creates and migrates a new database's tables with no lock of its own, and searches
started together lost a process to "table experiments already exists" or "duplicate column
name" in 5 of 5 tries. The turn also covers finding or creating the experiment and the study's
parent run, so those searches share one of each.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from autocompress.signals import shielded
from autocompress.sqlite_wal import use_wal
from autocompress.turns import sqlite_turn

_ROLE = "autocompress.role"  # tag: "study" on the parent run, "trial" on each trial's run
_MAX_BATCH = 100  # MLflow's limit on params per log_batch call
_MAX_VALUE = 6000  # MLflow's limit on a param value's length


def _now_ms() -> int:
    return int(time.time() * 1000)


class _ShieldedClient:
    """``MlflowClient`` whose every call finishes before a SIGINT/SIGTERM is raised: interrupted
    mid-write, MLflow's SQLite store kept the database locked for the rest of the search."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with shielded():
                return attribute(*args, **kwargs)

        return call


class Tracker:
    """One MLflow experiment per study; one parent run per study; one nested run per trial."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_dir: Path | None) -> None:
        use_wal()  # before MLflow opens its database
        self.tracking_uri = tracking_uri
        with sqlite_turn(tracking_uri):
            self.client = _ShieldedClient(MlflowClient(tracking_uri=tracking_uri))
            experiment = self.client.get_experiment_by_name(experiment_name)
            if experiment is None:
                location = artifact_dir.resolve().as_uri() if artifact_dir is not None else None
                self.experiment_id = self.client.create_experiment(
                    experiment_name, artifact_location=location
                )
            else:
                self.experiment_id = experiment.experiment_id
                if experiment.lifecycle_stage == "deleted":
                    self.client.restore_experiment(self.experiment_id)

    def open_parent(self, run_id: str | None, study_name: str) -> str:
        """The study's parent run: the stored one if it still exists, else the experiment's
        study run that another search just created, else a new one."""
        if run_id is not None:
            try:
                self.client.get_run(run_id)
            except MlflowException:
                run_id = None
            else:
                self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
                return run_id
        with sqlite_turn(self.tracking_uri):
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{_ROLE}` = 'study' and attributes.status = 'RUNNING'",
                max_results=1,
                order_by=["attributes.start_time ASC"],
            )
            if found:
                return str(found[0].info.run_id)
            run = self.client.create_run(
                self.experiment_id, run_name=study_name, tags={_ROLE: "study"}
            )
            return str(run.info.run_id)

    def start_trial(
        self, parent_id: str, number: int, params: Mapping[str, Any], plan: dict[str, Any]
    ) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number:03d}",
            tags={
                MLFLOW_PARENT_RUN_ID: parent_id,
                _ROLE: "trial",
                "trial": str(number),
                "state": "RUNNING",
            },
        )
        run_id = str(run.info.run_id)
        self.log_params(run_id, params)
        self.client.log_dict(run_id, plan, "plan.json")
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(str(k)[:250], str(v)[:_MAX_VALUE]) for k, v in params.items()]
        for i in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(run_id, params=items[i : i + _MAX_BATCH])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        stamp = _now_ms()
        self.write_metrics(run_id, [Metric(k, float(v), stamp, step) for k, v in metrics.items()])

    def write_metrics(self, run_id: str, items: Sequence[Metric]) -> None:
        for i in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(run_id, metrics=items[i : i + _MAX_BATCH])

    def epoch_log(self, run_id: str, every_s: float = 10.0) -> EpochLog:
        return EpochLog(self, run_id, every_s)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def end(
        self,
        run_id: str,
        status: str,
        tags: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        name: str | None = None,
        epochs: EpochLog | None = None,
    ) -> None:
        """The epochs still held back, final metrics, tags and name in one batch (more when
        over MLflow's batch limit), then status FINISHED, FAILED or KILLED."""
        stamp = _now_ms()
        items = [*(epochs.take() if epochs is not None else [])]
        items += [Metric(k, float(v), stamp, 0) for k, v in (metrics or {}).items()]
        all_tags = {**(tags or {}), **({MLFLOW_RUN_NAME: name} if name else {})}
        run_tags = [RunTag(k, str(v)) for k, v in all_tags.items()]
        for i in range(0, max(len(items), 1), _MAX_BATCH):
            self.client.log_batch(
                run_id, metrics=items[i : i + _MAX_BATCH], tags=run_tags if i == 0 else []
            )
        self.client.set_terminated(run_id, status=status)

    def log_dict(self, run_id: str, data: dict[str, Any], artifact_file: str) -> None:
        self.client.log_dict(run_id, data, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_table(self, run_id: str, columns: dict[str, list[Any]], artifact_file: str) -> None:
        self.client.log_table(run_id, columns, artifact_file)

    def log_file(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def download(self, run_id: str, artifact: str, destination: Path) -> Path | None:
        """The artifact's local copy, or None if the run has no such artifact."""
        try:
            return Path(self.client.download_artifacts(run_id, artifact, str(destination)))
        except (MlflowException, OSError):
            return None

    def register(self, name: str, run_id: str, artifact: str, tags: Mapping[str, str]) -> str:
        """A new version of registered model ``name`` whose source is a run's artifact."""
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact}"
        version = self.client.create_model_version(name, source, run_id=run_id, tags=dict(tags))
        return str(version.version)

    def close_if_running(self, run_id: str, status: str, tags: Mapping[str, Any]) -> bool:
        """End a run a dead worker left RUNNING; True if it was."""
        try:
            running = self.client.get_run(run_id).info.status == "RUNNING"
        except MlflowException:
            return False
        if running:
            self.end(run_id, status, tags)
        return running


class EpochLog:
    """A trial's per-epoch metrics, written in batches rather than one write per epoch.

    One write per epoch is ten SQLite transactions for a 10-epoch trial, or ten round trips
    to a remote tracking server, where one does (on local SQLite the saving is small: 8.0%
    of LeNet-300-100's 1.7 s trials stayed outside fine-tuning, docs/BENCHMARKS.md). Held back
    at most ``every_s`` seconds, so a long trial's curve still grows live in the UI;
    ``Tracker.end`` writes what is left.
    """

    def __init__(self, tracker: Tracker, run_id: str, every_s: float) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.every_s = every_s
        self._pending: list[Metric] = []
        self._written = time.monotonic()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        stamp = _now_ms()
        self._pending.extend(Metric(k, float(v), stamp, step) for k, v in metrics.items())
        if time.monotonic() - self._written >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.tracker.write_metrics(self.run_id, self.take())
        self._written = time.monotonic()

    def take(self) -> list[Metric]:
        """The metrics held back, now the caller's to write (``Tracker.end``: with the final
        ones, one transaction fewer per trial)."""
        pending, self._pending = self._pending, []
        return pending
