"""Seeding a worker's sampler by its first trial: workers started together draw differently."""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest
from optuna.samplers import BaseSampler, RandomSampler

from autocompress.sampler_seed import FirstTrialSeeded
from autocompress.study import make_sampler


def objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0, 1) + trial.suggest_int("bits", 2, 8)


def random_sampler(seed: int) -> BaseSampler:
    return RandomSampler(seed=seed)


def first_draw(study: optuna.Study) -> dict[str, object]:
    trial = study.ask()
    objective(trial)
    return trial.params


def two_workers_at_once(sampler_for: Callable[[optuna.Study], BaseSampler]) -> list[dict]:
    """Two workers load one study before either asks; each draws its first trial."""
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name="s")
    workers = [optuna.load_study(study_name="s", storage=storage) for _ in range(2)]
    for study in workers:
        study.sampler = sampler_for(study)
    return [first_draw(study) for study in workers]


def test_workers_that_load_a_study_at_once_draw_different_trials() -> None:
    # seeded by the trials each saw (0 for both): the same draw twice
    by_count = two_workers_at_once(lambda study: RandomSampler(seed=7 + len(study.trials)))
    assert by_count[0] == by_count[1]
    first, second = two_workers_at_once(lambda _: FirstTrialSeeded(random_sampler, 7))
    assert first != second


def test_a_lone_worker_draws_what_a_seed_from_the_trial_count_drew() -> None:
    draws = []
    for sampler in (
        FirstTrialSeeded(random_sampler, 7),
        RandomSampler(seed=7 + 3),
    ):
        study = optuna.create_study(sampler=RandomSampler(seed=0))
        study.optimize(objective, n_trials=3)  # a resumed study: 3 trials already
        study.sampler = sampler
        study.optimize(objective, n_trials=4)
        draws.append([t.params for t in study.trials[3:]])
    assert draws[0] == draws[1]


@pytest.mark.parametrize("name", ["tpe", "nsga2", "gp", "random"])
def test_every_sampler_runs_behind_it_and_a_seed_repeats_its_search(name: str) -> None:
    runs = []
    for _ in range(2):
        study = optuna.create_study(
            directions=["maximize", "minimize"],
            sampler=FirstTrialSeeded(lambda s: make_sampler(name, s, trials=12), 3),
        )
        study.optimize(lambda t: (objective(t), t.params["x"]), n_trials=12)
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]
    assert len({tuple(sorted(p.items())) for p in runs[0]}) > 1


def test_sampling_before_a_trial_started_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="first trial"):
        FirstTrialSeeded(random_sampler, 0).sampler  # noqa: B018
