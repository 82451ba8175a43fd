"""Refinement: front members queued again for longer fine-tuning, as trials of the study."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from autocompress.refine import REFINE_OF, Refiner

KEEP = {"keep/fc1": FloatDistribution(0.001, 1.0, log=True)}


def study_of(points: list[tuple[float, float]]) -> optuna.Study:
    """A real two-objective study whose trial i has accuracy, size = points[i]; keep = i / 100."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, values in enumerate(points):
        study.add_trial(
            create_trial(params={"keep/fc1": (i + 1) / 100}, distributions=KEEP, values=values)
        )
    return study


def waiting(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.WAITING,))


def test_queues_the_smallest_front_member_within_the_window() -> None:
    # front: (0.99, 900), (0.975, 500), (0.96, 300), (0.90, 100); (0.95, 950) is dominated
    study = study_of([(0.99, 900), (0.95, 950), (0.975, 500), (0.96, 300), (0.90, 100)])
    refiner = Refiner(every=2, window=0.03, baseline_accuracy=0.99, total_trials=100)
    refiner(study, study.trials[-1])  # 5 finished: 5 // 2 - 1 = 1 refinement due
    [queued] = waiting(study)
    # 0.96 is the smallest within 3 points of 0.99; 0.90 is below the window
    assert queued.user_attrs[REFINE_OF] == 3
    assert queued.params == {} and queued.system_attrs["fixed_params"] == {"keep/fc1": 0.04}

    refiner(study, study.trials[-1])  # one queued already, none more due
    assert len(waiting(study)) == 1


def test_refines_each_member_once_and_never_past_the_budget() -> None:
    study = study_of([(0.99, 900), (0.975, 500), (0.96, 300), (0.98, 600)])
    refiner = Refiner(every=1, window=0.03, baseline_accuracy=0.99, total_trials=100)
    refiner(study, study.trials[-1])
    refiner(study, study.trials[-1])
    queued = [t.user_attrs[REFINE_OF] for t in waiting(study)]
    assert queued == [2, 1]  # by size: 300 bytes, then 500; each once
    full = study_of([(0.99, 900), (0.975, 500), (0.96, 300), (0.98, 600)])
    Refiner(every=1, window=0.03, baseline_accuracy=0.99, total_trials=4)(full, full.trials[-1])
    assert waiting(full) == []  # the budget is spent: nothing queued that could not run


def test_nothing_within_the_window_queues_nothing() -> None:
    study = study_of([(0.90, 900), (0.85, 500), (0.80, 300), (0.70, 100)])
    Refiner(every=1, window=0.03, baseline_accuracy=0.99, total_trials=100)(study, study.trials[-1])
    assert waiting(study) == []


@pytest.mark.slow
def test_search_refines_front_members_with_longer_fine_tuning(
    run_cli: Callable[..., CompletedProcess[str]], tmp_path: Path
) -> None:
    (tmp_path / "space.yaml").write_text(
        "layers: [{match: '*', bits: [4, 8], keep: {low: 0.05, high: 1.0, log: true}}]\n"
        "finetune: {epochs: 2, lr: 1.0e-3, batch_size: 128}\n"
    )
    (tmp_path / "c.yaml").write_text(
        "model: mlp\ndata: digits\nearly_stop_drop: 1.0\nteacher: {epochs: 8}\n"
        f"space: {tmp_path / 'space.yaml'}\nrefine: {{every: 2, window: 1.0}}\n"
    )
    result = run_cli(
        "search", "--config", "c.yaml", "--trials", "10", "--refine-epochs", "5", "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    url = f"sqlite:///{tmp_path / 'autocompress-runs' / 'mlp-digits-space' / 'optuna.db'}"
    study = optuna.load_study(study_name="mlp-digits-space", storage=url)
    assert len(study.trials) == 10 and all(t.state == TrialState.COMPLETE for t in study.trials)
    refined = [t for t in study.trials if REFINE_OF in t.user_attrs]
    assert len(refined) >= 2  # due after trials 4, 6 and 8, when each ends
    for trial in refined:
        original = study.trials[trial.user_attrs[REFINE_OF]]
        assert REFINE_OF not in original.user_attrs and original.number < trial.number
        assert trial.params == original.params
        assert trial.user_attrs["plan"]["finetune"]["epochs"] == 5
        assert original.user_attrs["plan"]["finetune"]["epochs"] == 2
    assert len({t.user_attrs[REFINE_OF] for t in refined}) == len(refined)
