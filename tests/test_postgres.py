"""Several workers on one study through a real PostgreSQL server on loopback."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import optuna
import pytest
from mlflow import MlflowClient

Run = Callable[..., CompletedProcess[str]]
pytestmark = pytest.mark.slow


def quick(tmp_path: Path) -> str:
    path = tmp_path / "pg.yaml"
    path.write_text(
        "model: mlp\ndata: digits\nearly_stop_drop: 1.0\nteacher: {epochs: 8}\n"
        "out: out\nspace: quantize_only\n"
    )
    return str(path)


def test_three_workers_reach_the_total_on_postgres(
    postgres: str, run_cli: Run, tmp_path: Path
) -> None:
    result = run_cli(
        "search", "--config", quick(tmp_path), "--storage", postgres, "--study-name", "pg3",
        "--workers", "3", "--trials", "12", "--no-progress", timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="pg3", storage=postgres)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 12
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pg3")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    per_trial: dict[int, int] = {}
    for run in runs:
        if "trial" in run.data.tags:
            number = int(run.data.tags["trial"])
            per_trial[number] = per_trial.get(number, 0) + 1
    assert all(per_trial.get(t.number) == 1 for t in complete)

    # The written front equals the one recomputed from every complete trial.
    def dominated(a: optuna.trial.FrozenTrial) -> bool:
        return any(
            b.values[0] >= a.values[0]
            and b.values[1] <= a.values[1]
            and tuple(b.values) != tuple(a.values)
            for b in complete
        )

    expected = {t.number for t in complete if not dominated(t)}
    with (tmp_path / "out" / "pareto.csv").open() as handle:
        written = {int(row["trial"]) for row in csv.DictReader(handle)}
    assert written == expected


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda url: url.replace("s3cret", "wrong"), "password authentication failed"),
        (lambda url: url.rsplit(":", 1)[0] + ":1/ac", "cannot open 'postgresql://postgres:***@"),
    ],
)
def test_bad_storage_is_one_line_exit_2_and_writes_nothing(
    postgres: str, run_cli: Run, tmp_path: Path, mangle: Callable[[str], str], message: str
) -> None:
    result = run_cli("search", "--config", quick(tmp_path), "--storage", mangle(postgres))
    assert result.returncode == 2
    assert result.stderr.startswith("autocompress: error: storage: cannot open ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert "s3cret" not in result.stderr and "wrong" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_study_name_taken_by_another_config_is_refused(
    postgres: str, run_cli: Run, tmp_path: Path
) -> None:
    first = run_cli("search", "--config", quick(tmp_path), "--storage", postgres,
                    "--study-name", "taken", "--trials", "1", "--no-progress")  # fmt: skip
    assert first.returncode == 0, first.stderr
    other = tmp_path / "other"
    other.mkdir()
    second = run_cli("search", "--config", quick(tmp_path), "--storage", postgres,
                     "--study-name", "taken", "--space", "prune_only", cwd=other)  # fmt: skip
    assert second.returncode == 2
    assert "study_name: study 'taken' exists with another model, data or search space" in (
        second.stderr
    )
    assert list(other.iterdir()) == []
