"""GP shown the trials early stopping ended, as complete with their values at the stop."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from autocompress.gp import VALUES_AT_STOP, StoppedAwareGPSampler, _StudyWithStopped
from autocompress.study import make_sampler

SPACE = {"keep": FloatDistribution(0.001, 1.0, log=True), "lr": FloatDistribution(1e-4, 1e-1)}
DIRECTIONS = ["maximize", "minimize"]


def points(n: int) -> list[tuple[dict[str, float], list[float]]]:
    """Plans and (accuracy, size) outcomes: the fewer weights kept, the smaller and worse."""
    out = []
    for i in range(n):
        keep, lr = 0.001 * 1000 ** (i / (n - 1)), 1e-4 + 0.1 * ((7 * i) % n) / n
        out.append(({"keep": keep, "lr": lr}, [0.5 + 0.45 * keep**0.2, 1000.0 * keep]))
    return out


def study_with(stopped_as: TrialState, n: int = 14, stopped: tuple[int, ...] = (1, 4, 9)):
    """``n`` trials; those in ``stopped`` are pruned with their values at the stop (or, with
    ``stopped_as`` COMPLETE, plain complete trials with the same values)."""
    study = optuna.create_study(directions=DIRECTIONS)
    for i, (params, values) in enumerate(points(n)):
        if i in stopped and stopped_as == TrialState.PRUNED:
            trial = create_trial(
                state=TrialState.PRUNED,
                params=params,
                distributions=SPACE,
                user_attrs={VALUES_AT_STOP: values},
            )
        else:
            trial = create_trial(values=values, params=params, distributions=SPACE)
        study.add_trial(trial)
    return study


def test_stopped_trials_with_values_read_as_complete_and_stay_pruned_in_the_study() -> None:
    study = study_with(TrialState.PRUNED, n=4, stopped=(1,))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"keep": 0.5, "lr": 0.01},
                                 distributions=SPACE))  # fmt: skip  # stopped before measuring
    seen = _StudyWithStopped(study, {})
    complete = seen._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=False)
    assert [t.number for t in complete] == [0, 1, 2, 3]
    assert complete[1].values == points(4)[1][1]
    pruned = seen._get_trials(deepcopy=False, states=(TrialState.PRUNED,), use_cache=False)
    assert [t.number for t in pruned] == [4]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED] + [
        TrialState.COMPLETE
    ] * 2 + [TrialState.PRUNED]
    assert study.trials[1].values is None


def test_gp_draws_as_if_the_stopped_trials_had_completed_with_their_values() -> None:
    shown = study_with(TrialState.PRUNED)
    complete = study_with(TrialState.COMPLETE)
    ours = StoppedAwareGPSampler(seed=3, n_startup_trials=5)
    optunas = optuna.samplers.GPSampler(seed=3, n_startup_trials=5)
    shown.sampler, complete.sampler = ours, optunas
    drawn = [study.ask(SPACE).params for study in (shown, complete)]
    assert drawn[0] == drawn[1]
    # Optuna's own GP sees only the complete trials here: a different model, another draw.
    blind = study_with(TrialState.PRUNED)
    blind.sampler = optuna.samplers.GPSampler(seed=3, n_startup_trials=5)
    assert blind.ask(SPACE).params != drawn[0]


def test_the_gp_sampler_of_a_search_models_stopped_trials() -> None:
    assert isinstance(make_sampler("gp", 0), StoppedAwareGPSampler)
