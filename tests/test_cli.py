"""The real ``autocompress`` command end to end on the embedded digits data."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import optuna
import pytest
from mlflow import MlflowClient

from autocompress.cli import main
from autocompress.config import ExperimentConfig
from autocompress.finetune import validated_epochs

Run = Callable[..., CompletedProcess[str]]
STUDY = "mlp-digits-default"


def quick_config(directory: Path) -> Path:
    """Digits with a shorter baseline training (fast) and no early stopping (3 complete)."""
    path = directory / "quick.yaml"
    path.write_text("model: mlp\ndata: digits\nearly_stop_drop: 1.0\nteacher: {epochs: 8}\n")
    return path


def trial_runs(out: Path) -> tuple[MlflowClient, str, list]:  # type: ignore[type-arg]
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("autocompress.role") == "study"]
    assert len(parents) == 1
    parent = parents[0].info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(runs) == 1 + len(children)
    return client, parent, children


def dominated(a: dict[str, str], b: dict[str, str]) -> bool:
    """a is dominated by b: b at least as accurate and at most as large, better in one."""
    acc_a, size_a = float(a["val_accuracy"]), int(a["size_bytes"])
    acc_b, size_b = float(b["val_accuracy"]), int(b["size_bytes"])
    return acc_b >= acc_a and size_b <= size_a and (acc_b > acc_a or size_b < size_a)


@pytest.mark.slow
def test_search_then_resume(run_cli: Run, tmp_path: Path) -> None:
    config = quick_config(tmp_path)
    first = run_cli(
        "search", "--config", str(config), "--trials", "3", "--no-cuda-graphs", "--no-progress"
    )
    assert first.returncode == 0, first.stderr
    out = tmp_path / "autocompress-runs" / STUDY
    assert "Pareto front of study 'mlp-digits-default'" in first.stdout

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / 'optuna.db'}")
    assert study.user_attrs["config"]["cuda_graphs"] is False
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 3
    for trial in complete:
        assert 0.0 <= trial.values[0] <= 1.0 and trial.values[1] > 0
        assert set(trial.user_attrs["plan"]["layers"]) == {"fc1", "fc2", "fc3"}

    client, parent, children = trial_runs(out)
    assert len(children) == 3
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["state"] == "COMPLETE"
        assert run.data.tags["pareto"] in ("true", "false")
        assert {"accuracy", "size_bytes", "compression_ratio"} <= set(run.data.metrics)
        assert "bits/fc1" in run.data.params
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        # the default space's 10 epochs, validated after 1 and every validate_every-th back from 10
        validated = validated_epochs(10, ExperimentConfig.validate_every)
        assert [m.step for m in history] == sorted(validated)
    front_runs = [r for r in children if r.data.tags["pareto"] == "true"]
    assert all("test_accuracy" in r.data.metrics for r in front_runs)
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"pareto.png", "pareto.csv", "pareto.json", "config.json"} <= artifacts

    with (out / "pareto.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and len(rows) == len(front_runs)
    assert not any(dominated(a, b) for a in rows for b in rows)
    document = json.loads((out / "pareto.json").read_text())
    assert document["baseline"]["float32_bytes"] > max(int(r["size_bytes"]) for r in rows)
    assert (out / "pareto.png").stat().st_size > 1000
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(
        f"trial-{int(r['trial']):04d}.acz" for r in rows
    )

    # The same command with a larger total resumes the study under the same parent run.
    second = run_cli("search", "--config", str(config), "--trials", "5", "--no-progress")
    assert second.returncode == 0, second.stderr
    assert "baseline (cache)" in second.stdout
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / 'optuna.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    _, parent_again, children = trial_runs(out)
    assert parent_again == parent
    assert len(children) == 5

    listed = run_cli("pareto", "--study", STUDY)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("\n") >= 2 + len(study.best_trials)

    # Every front member, exported and evaluated from its file alone in a new process, gives
    # the accuracy the search measured, and its bytes are the size the search reported.
    exported = run_cli("export", "--study", STUDY, "--pareto", "-o", "files")
    assert exported.returncode == 0, exported.stderr
    for trial in study.best_trials:
        path = tmp_path / "files" / f"trial-{trial.number:04d}.acz"
        assert path.stat().st_size == trial.values[1]
        evaluated = run_cli("evaluate", str(path), "--data", "digits")
        assert evaluated.returncode == 0, evaluated.stderr
        assert f"val accuracy   {trial.values[0]:.2%}" in evaluated.stdout
        tested = study.user_attrs["test_accuracy"][str(trial.number)]
        assert f"test accuracy  {tested:.2%}" in evaluated.stdout
    inspected = run_cli("inspect", str(path))
    assert inspected.returncode == 0 and "fc1" in inspected.stdout
    registered = run_cli("register", "--study", STUDY, "--trial", str(trial.number))
    assert registered.returncode == 0, registered.stderr
    version = client.get_model_version(STUDY, "1")
    assert version.run_id == trial.user_attrs["mlflow_run_id"]
    report = run_cli("report", "--study", STUDY, "-o", "r.html")
    assert report.returncode == 0 and (tmp_path / "r.html").stat().st_size > 1000


def test_bad_files_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.acz").write_bytes(b"not a compressed model")
    for args, expected in [
        (["inspect", "junk.acz"], "file: "),
        (["evaluate", "junk.acz", "--data", "digits"], "file: "),
        (["inspect", "missing.acz"], "file: 'missing.acz' does not exist"),
    ]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"autocompress: error: {expected}") and err.count("\n") == 1


def test_help_explains_every_option(run_cli: Run) -> None:
    result = run_cli("search", "--help")
    assert result.returncode == 0
    for option in (
        "--config",
        "--model",
        "--data",
        "--space",
        "--trials",
        "--timeout",
        "--device",
        "--no-cuda-graphs",
        "--seed",
        "--out",
        "--storage",
        "--study-name",
        "--mlflow-uri",
    ):
        assert option in result.stdout


def bad_space(tmp_path: Path, body: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "resnet9000"], "model: unknown model 'resnet9000'"),
        (["--data", "cifar"], "data: unknown data spec 'cifar'"),
        (["--data", "mnist:/no/such/dir"], "data: mnist directory '/no/such/dir' does not exist"),
        (["--data", "mnist:EMPTY"], "data: no MNIST IDX files"),
        (["--model", "missing.py:make"], "model:"),
        (["--space", "nope"], "space: unknown search space 'nope'"),
        (["--space", "missing.yaml"], "space: file 'missing.yaml' does not exist"),
        (["--space", "SPACE:layers: [unclosed"], "space: "),
        (["--space", "SPACE:layerz: []"], "space.layerz: unknown key"),
        (
            ["--space", "SPACE:layers: [{match: '*', bits: [0, 4]}]"],
            "space.layers[0].bits: bits must be",
        ),
        (
            ["--space", "SPACE:layers: [{match: '*', bits: 64}]"],
            "space.layers[0].bits: bits must be",
        ),
        (["--space", "SPACE:layers: [{match: '*', prune: 1.5}]"], "prune ratio must be in [0, 1)"),
        (
            ["--space", "SPACE:layers: [{match: 'conv*'}]"],
            "space.layers[0].match: ['conv*'] matches no layer",
        ),
        (["--checkpoint", "missing.pt"], "checkpoint:"),
        (["--checkpoint", "CKPT"], "checkpoint: does not fit the model"),
        (["--config", "missing.yaml"], "config: file 'missing.yaml' does not exist"),
        (["--trials", "0"], "trials: must be positive"),
        (["--device", "gpu"], "device: 'gpu' is not one of auto, cpu, cuda, cuda:K"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(
    args: list[str],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import torch

    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    torch.save({"fc1.weight": torch.zeros(3, 3)}, tmp_path / "CKPT")
    resolved = []
    for arg in args:
        if arg.startswith("SPACE:"):
            arg = bad_space(tmp_path, arg.removeprefix("SPACE:") + "\n")
        resolved.append(arg.replace("EMPTY", str(tmp_path / "EMPTY")))
    before = set(tmp_path.iterdir())
    assert main(["search", *resolved, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autocompress: error: ")
    assert expected.replace("EMPTY", str(tmp_path / "EMPTY")) in err
    assert err.count("\n") == 1
    assert set(tmp_path.iterdir()) == before  # no study, no MLflow store, no output directory


def test_pareto_of_a_missing_study_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["pareto", "--study", "nothing-here"]) == 2
    assert "study_name: no study storage" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
