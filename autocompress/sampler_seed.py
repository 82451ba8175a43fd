"""A worker's sampler, seeded by the number of the first trial the worker starts.

Workers that load one study at the same moment (a batch system's job array of searches, or
``autocompress worker`` on several machines without ``--worker-index``) saw the same number of
trials, so a seed taken from it was the same and their samplers drew the same configurations
(3 searches started together: their 3 first trials identical). The storage hands out each trial
number once, so a seed taken from the worker's first trial differs between workers. A lone
worker's first trial is the study's next number, the count a seed was taken from before, so a
seeded search draws what it drew before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState


class FirstTrialSeeded(BaseSampler):
    """Delegates to ``make(seed + number of this worker's first trial)``, made at that trial's
    start: Optuna calls ``before_trial`` before it samples anything for a trial."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make = make
        self._seed = seed
        self._sampler: BaseSampler | None = None

    @property
    def sampler(self) -> BaseSampler:
        if self._sampler is None:
            raise RuntimeError("the sampler is made when the worker's first trial starts")
        return self._sampler

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self._sampler is None:
            self._sampler = self._make(self._seed + trial.number)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        if self._sampler is not None:
            self._sampler.reseed_rng()
