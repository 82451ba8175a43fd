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

import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

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

    def trial_run(
        self,
        parent_id: str,
        number: int,
        params: Mapping[str, Any],
        plan: dict[str, Any],
        on_open: Callable[[str], None],
        open_after_s: float = 10.0,
    ) -> TrialRun:
        """A trial's run, written when it ends or once it has run ``open_after_s`` seconds;
        ``on_open`` receives the run's id when it exists."""
        return TrialRun(self, parent_id, number, params, plan, on_open, open_after_s)

    def add_trial_run(
        self,
        parent_id: str,
        number: int,
        params: Mapping[str, Any],
        plan: dict[str, Any],
        tags: Mapping[str, Any],
        status: str,
        start_ms: int | None = None,
    ) -> None:
        """The run of a trial that a dead worker left without a recorded one, ended with
        ``status``: written now (started at ``start_ms``), or the one it wrote just before it
        died, ended."""
        with sqlite_turn(self.tracking_uri):  # two resuming searches write it once
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}' "
                f"and tags.trial = '{number}'",
                max_results=1,
            )
            if not found:
                run = TrialRun(
                    self, parent_id, number, params, plan, lambda _: None, math.inf, start_ms
                )
                run.end(status, tags)
            elif found[0].info.status == "RUNNING":
                self.end(found[0].info.run_id, status, tags)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        stamp = _now_ms()
        self.write_batch(run_id, [Metric(k, float(v), stamp, step) for k, v in metrics.items()])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def end(
        self,
        run_id: str,
        status: str,
        tags: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        name: str | None = None,
        held: Sequence[Metric] = (),
        params: Sequence[Param] = (),
    ) -> None:
        """Metrics held back and final ones, parameters, tags and name in one batch (more when
        over MLflow's batch limits), then status FINISHED, FAILED or KILLED."""
        stamp = _now_ms()
        items = [*held, *(Metric(k, float(v), stamp, 0) for k, v in (metrics or {}).items())]
        all_tags = {**(tags or {}), **({MLFLOW_RUN_NAME: name} if name else {})}
        run_tags = [RunTag(k, str(v)) for k, v in all_tags.items()]
        self.write_batch(run_id, items, params, run_tags)
        self.client.set_terminated(run_id, status=status)

    def write_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric],
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
    ) -> None:
        """One ``log_batch``, or as many as MLflow's per-batch limits take."""
        for i in range(0, max(len(metrics), len(params), len(tags), 1), _MAX_BATCH):
            self.client.log_batch(
                run_id,
                metrics=metrics[i : i + _MAX_BATCH],
                params=params[i : i + _MAX_BATCH],
                tags=tags[i : i + _MAX_BATCH],
            )

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


class TrialRun:
    """One trial's MLflow run, created when the trial ends, or once it has run ``open_after_s``
    seconds so that a long trial's curve grows live in the UI (its epochs are written at most
    every ``open_after_s`` seconds from then on).

    Created at the trial's start, a run took seven MLflow writes (the run, its parameters,
    plan.json, the file, the final batch, the final name, the end), about 20 ms of a 1.3 s
    LeNet-300-100 trial; created at its end it takes four (the run under its final name, one
    batch, the files, the end) and looks the same. Its start time is the trial's. A trial
    shorter than ``open_after_s`` is not in MLflow while it runs; one a dead worker left
    before then gets its run from the next search (``Tracker.add_trial_run``). The artifacts go
    through the run's artifact repository, built from the URI the new run returns, which
    saves MLflow's lookup of the run by id (3.6 ms).
    """

    def __init__(
        self,
        tracker: Tracker,
        parent_id: str,
        number: int,
        params: Mapping[str, Any],
        plan: dict[str, Any],
        on_open: Callable[[str], None],
        open_after_s: float,
        start_ms: int | None = None,
    ) -> None:
        self.tracker = tracker
        self.parent_id = parent_id
        self.number = number
        self.params = [Param(str(k)[:250], str(v)[:_MAX_VALUE]) for k, v in params.items()]
        self.plan = plan
        self.on_open = on_open
        self.open_after_s = open_after_s
        self.run_id: str | None = None
        self._repo: ArtifactRepository | None = None
        self._start_ms = _now_ms() if start_ms is None else start_ms
        self._held: list[Metric] = []
        self._written = time.monotonic()

    def log_epoch(self, metrics: Mapping[str, float], step: int) -> None:
        stamp = _now_ms()
        self._held.extend(Metric(k, float(v), stamp, step) for k, v in metrics.items())
        if time.monotonic() - self._written >= self.open_after_s:
            opening = self.run_id is None
            if opening:
                self._open(f"trial-{self.number:03d}", {"state": "RUNNING"})
            params = self.params if opening else []
            self.tracker.write_batch(self._id(), self._take(), params)
            self._written = time.monotonic()

    def end(
        self,
        status: str,
        tags: Mapping[str, Any],
        metrics: Mapping[str, float] | None = None,
        name: str | None = None,
        files: Sequence[Path] = (),
    ) -> None:
        """Status FINISHED, FAILED or KILLED, with the epochs held back and the final metrics,
        tags, name and files. A run created now gets its name and tags with it (no rename)."""
        if self.run_id is None:
            self._open(name or f"trial-{self.number:03d}", tags)
            tags, name, params = {}, None, self.params
        else:
            params = []
        self._log_files(files)
        self.tracker.end(self._id(), status, tags, metrics, name, self._take(), params)

    def _open(self, name: str, tags: Mapping[str, Any]) -> None:
        run = self.tracker.client.create_run(
            self.tracker.experiment_id,
            start_time=self._start_ms,
            run_name=name,
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_id,
                _ROLE: "trial",
                "trial": str(self.number),
                **{k: str(v) for k, v in tags.items()},
            },
        )
        self.run_id = str(run.info.run_id)
        self._repo = get_artifact_repository(
            add_databricks_profile_info_to_artifact_uri(
                run.info.artifact_uri, self.tracker.tracking_uri
            ),
            tracking_uri=self.tracker.tracking_uri,
        )
        self.on_open(self.run_id)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "plan.json"
            path.write_text(json.dumps(self.plan, indent=2))
            self._log_files([path])

    def _log_files(self, files: Sequence[Path]) -> None:
        assert self._repo is not None
        for path in files:
            with shielded():
                self._repo.log_artifact(str(path))

    def _id(self) -> str:
        assert self.run_id is not None
        return self.run_id

    def _take(self) -> list[Metric]:
        held, self._held = self._held, []
        return held
