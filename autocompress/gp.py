"""Optuna's GP sampler, shown the trials that early stopping ended.

Optuna's ``GPSampler`` fits its model to complete trials only. Early stopping ends a hopeless
trial as pruned, so GP never learns that its plan was hopeless and proposes the same plan
again: in a 60-minute LeNet-300-100 search (docs/BENCHMARKS.md) it drew one plan, with
small variations, for 4,970 of its 5,000 trials, every one stopped after its first epoch.
Here each stopped trial that recorded its objectives at the stop (``VALUES_AT_STOP``: the
accuracy that stopped it, the size of its file as it stood, with gradual pruning's masks as
far as they had come) is shown to GP as a complete trial with those values; the study's
records keep it as pruned, so fronts and reports are unchanged.
The accuracy at a stop is below what the plan would have reached, and by the stop's own test
it could not have ended near the baseline: a pessimistic, measured point, not a made-up one.

This module and ``study.make_sampler`` are the only ones that know how GP reads a study
(``Study._get_trials``).
"""

from __future__ import annotations

import copy
from collections.abc import Container
from typing import Any, cast

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

# A stopped trial's objectives at the stop, in the study's objective order (a user attribute).
VALUES_AT_STOP = "values_at_stop"


class _StudyWithStopped:
    """A study whose stopped trials with ``VALUES_AT_STOP`` read as complete with those values;
    everything else is the study's own."""

    def __init__(self, study: optuna.Study, shown: dict[int, FrozenTrial]) -> None:
        self._study = study
        self._shown = shown  # trial id -> its complete copy, made once per trial

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)
        seen = (self._as_complete(t) for t in trials)
        return [t for t in seen if states is None or t.state in states]

    def _as_complete(self, trial: FrozenTrial) -> FrozenTrial:
        if trial.state != TrialState.PRUNED or VALUES_AT_STOP not in trial.user_attrs:
            return trial
        if trial._trial_id not in self._shown:
            shown = copy.copy(trial)
            shown.state = TrialState.COMPLETE
            shown.values = [float(v) for v in trial.user_attrs[VALUES_AT_STOP]]
            self._shown[trial._trial_id] = shown
        return self._shown[trial._trial_id]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class StoppedAwareGPSampler(optuna.samplers.GPSampler):
    """``GPSampler`` that models the stopped trials' values at their stop too."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shown: dict[int, FrozenTrial] = {}

    def _seen(self, study: optuna.Study) -> optuna.Study:
        return cast(optuna.Study, _StudyWithStopped(study, self._shown))

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return super().infer_relative_search_space(self._seen(study), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return super().sample_relative(self._seen(study), trial, search_space)
