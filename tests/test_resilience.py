"""Overnight runs: SIGTERM, SIGKILL mid-trial, timeouts, several workers on one study."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import REPO
from mlflow import MlflowClient
from mlflow.entities import Experiment

STUDY = "mlp-digits-slow"
# A trial lasts 0.015 s an epoch here: 300 epochs keep one running for seconds, far longer than
# the poll and the sleep before a signal (40 epochs, 0.7 s, once let the trial finish first).
SLOW_EPOCHS = 300
pytestmark = pytest.mark.slow


def start(tmp_path: Path, *args: str, epochs: int = SLOW_EPOCHS) -> subprocess.Popen[str]:
    config = tmp_path / "overnight.yaml"
    # Slow trials (many epochs) so a signal lands mid-trial; a 1 s heartbeat, 3 s grace.
    write_unless_same(
        config,
        "model: mlp\ndata: digits\nearly_stop_drop: 1.0\nheartbeat: 1\nteacher: {epochs: 8}\n"
        f"space: {tmp_path / 'slow.yaml'}\n",
    )
    write_unless_same(
        tmp_path / "slow.yaml",
        "layers: [{match: '*', bits: [4, 8], prune: {low: 0.0, high: 0.8, step: 0.1}}]\n"
        f"finetune: {{epochs: {epochs}, lr: 1.0e-3, batch_size: 128}}\n",
    )
    # faulthandler: a search that does not exit in time dumps its threads' stacks (see finish)
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore", PYTHONFAULTHANDLER="1")
    return subprocess.Popen(
        [sys.executable, "-m", "autocompress", "search", "--config", str(config),
         "--no-progress", *args],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def write_unless_same(path: Path, text: str) -> None:
    """Searches started a moment earlier may be reading the file: leave it alone if unchanged."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def finish(process: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """The process's output once it exits; past ``timeout``, fail with its threads' stacks."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _, err = process.communicate()
        raise AssertionError(f"no exit within {timeout} s; its stacks:\n{err[-6000:]}") from None


def outside_finetuning(out: str) -> float:
    """The percentage the search's summary line gives."""
    match = re.search(r"(-?[\d.]+)% outside fine-tuning", out)
    assert match is not None, out
    return float(match.group(1))


def load(tmp_path: Path) -> optuna.Study:
    url = f"sqlite:///{tmp_path / 'autocompress-runs' / STUDY / 'optuna.db'}"
    return optuna.load_study(study_name=STUDY, storage=url)


def wait_mid_trial(tmp_path: Path, process: subprocess.Popen[str], complete: int) -> int:
    """Poll the study until `complete` trials are done and the next one is running."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        db = tmp_path / "autocompress-runs" / STUDY / "optuna.db"
        if db.exists():
            try:
                trials = load(tmp_path).trials
            except Exception:  # the search is still creating its tables
                trials = []
            done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
            running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
            if len(done) >= complete and running and "plan" in running[0].user_attrs:
                time.sleep(0.5)
                return running[0].number
        time.sleep(0.2)
    raise AssertionError("no trial was running in time")


def mlflow_client(tmp_path: Path) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'autocompress-runs' / STUDY / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri)


def study_experiment(tmp_path: Path) -> Experiment:
    experiment = mlflow_client(tmp_path).get_experiment_by_name(STUDY)
    assert experiment is not None
    return experiment


def test_sigterm_stops_the_trial_writes_the_front_and_exits_143(tmp_path: Path) -> None:
    process = start(tmp_path, "--trials", "50")
    number = wait_mid_trial(tmp_path, process, complete=1)
    process.send_signal(signal.SIGTERM)
    _, err = finish(process, 180)
    assert process.returncode == 143, err
    assert "interrupted by SIGTERM" in err
    study = load(tmp_path)
    trial = study.trials[number]
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "SIGTERM" in trial.user_attrs["fail_reason"]
    client = mlflow_client(tmp_path)
    assert client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "KILLED"
    out = tmp_path / "autocompress-runs" / STUDY
    assert (out / "pareto.csv").read_text().count("\n") >= 2  # header + at least one model


def test_sigkill_mid_trial_then_resume_retries_it_and_loses_nothing(tmp_path: Path) -> None:
    process = start(tmp_path, "--trials", "3")
    number = wait_mid_trial(tmp_path, process, complete=1)
    killed_params = load(tmp_path).trials[number].params
    process.kill()
    process.wait()
    assert load(tmp_path).trials[number].state == RUNNING  # killed mid-trial, as intended
    complete_before = {
        t.number for t in load(tmp_path).trials if t.state == optuna.trial.TrialState.COMPLETE
    }
    time.sleep(3.5)  # past the 3 s grace period: the killed trial's heartbeat is stale

    again = start(tmp_path, "--trials", "3")
    _, err = finish(again, 300)
    assert again.returncode == 0, err
    study = load(tmp_path)
    states = {t.number: t.state for t in study.trials}
    assert states[number] == optuna.trial.TrialState.FAIL
    assert RUNNING not in states.values()
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    assert complete_before <= {t.number for t in complete}
    retried = [t for t in study.trials if t.number != number and t.params == killed_params]
    assert retried and retried[0].state == optuna.trial.TrialState.COMPLETE
    # It died before its MLflow run was written (a trial's run is written when it ends, or
    # after 10 s): the resumed search wrote it, once, as FAILED.
    assert "mlflow_run_id" not in study.trials[number].user_attrs
    runs = mlflow_client(tmp_path).search_runs(
        [study_experiment(tmp_path).experiment_id], filter_string=f"tags.trial = '{number}'"
    )
    assert [(r.info.status, r.data.tags["state"]) for r in runs] == [("FAILED", "FAIL")]
    assert {k: float(v) for k, v in runs[0].data.params.items()} == killed_params
    started = study.trials[number].datetime_start
    assert started is not None and runs[0].info.start_time == int(started.timestamp() * 1000)


RUNNING = optuna.trial.TrialState.RUNNING


def test_timeout_ends_cleanly(tmp_path: Path) -> None:
    process = start(tmp_path, "--trials", "500", "--timeout", "3s", epochs=2)
    out, err = finish(process, 300)
    assert process.returncode == 0, err
    trials = load(tmp_path).trials
    assert 1 <= len(trials) < 500
    assert all(t.state.is_finished() for t in trials)
    assert "Pareto front" in out


def test_two_local_workers_share_one_study(tmp_path: Path) -> None:
    process = start(tmp_path, "--trials", "6", "--workers", "2", epochs=2)
    out, err = finish(process, 300)
    assert process.returncode == 0, err
    assert 0 < outside_finetuning(out) < 100  # the two workers' fine-tuning overlaps in time
    study = load(tmp_path)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    client = mlflow_client(tmp_path)
    parent = study.user_attrs["mlflow_parent_run_id"]
    runs = client.search_runs(
        [client.get_experiment_by_name(STUDY).experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'",
    )
    assert sorted(int(r.data.tags["trial"]) for r in runs) == sorted(numbers)


def test_searches_started_together_on_a_new_study_share_it(tmp_path: Path) -> None:
    """A job array: 3 searches at once on one new study. Before, their race to create the
    Optuna and MLflow tables lost one of them in every try, and each made its own parent run."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "layers: [{match: '*', bits: 8, prune: 0.5}]\n"
        "finetune: {epochs: 2, lr: 1.0e-3, batch_size: 128}\n"
    )
    warm = ("--warm-start", str(recipe))
    processes = [start(tmp_path, "--trials", "4", *warm, epochs=2) for _ in range(3)]
    for process in processes:
        out, err = finish(process, 300)
        assert process.returncode == 0, err
        assert 0 < outside_finetuning(out) < 100  # it also counts the others' trials
    study = load(tmp_path)
    numbers = [t.number for t in study.trials]
    # --trials is the study's total; a worker finishes the trial it started when it is reached
    assert 4 <= len(numbers) <= 4 + 2
    assert all(t.state.is_finished() for t in study.trials)
    # each sampler seeded by its worker's first trial: before, the 3 first trials were one plan
    plans = {tuple(sorted(t.params.items())) for t in study.trials}
    assert len(plans) == len(numbers)
    assert len([t for t in study.trials if "warm_start" in t.user_attrs]) == 1  # queued once
    client = mlflow_client(tmp_path)
    experiment = client.get_experiment_by_name(STUDY).experiment_id
    parents = client.search_runs([experiment], filter_string="tags.`autocompress.role` = 'study'")
    assert [r.info.run_id for r in parents] == [study.user_attrs["mlflow_parent_run_id"]]
    runs = client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'"
    )
    assert sorted(int(r.data.tags["trial"]) for r in runs) == sorted(numbers)
