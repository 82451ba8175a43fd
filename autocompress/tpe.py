"""Optuna's TPE sampler, with the per-trial work it redoes for every finished trial done once.

TPE draws a trial's parameters from all finished trials, and Optuna 5 rebuilds two things
from every one of them on each draw: the grouped search space (each trial's distributions
added again) and each trial's parameters in internal form (one ``to_internal_repr`` per
parameter). A finished trial never changes, so both are kept here per trial. Over a 60-minute
LeNet-300-100 search (2,685 trials) a draw grew from 4.4 to 35 ms, a quarter of a 1.3 s
trial's time outside fine-tuning at the end (docs/BENCHMARKS.md); overnight searches run ten
times as many trials. The draws are identical to ``TPESampler``'s with the same seed
(tests/test_tpe.py compares them): only repeated work is kept, the model is unchanged.

This module and ``study.make_sampler`` are the only ones that know TPE's internals, so a
change in Optuna's private names (``_get_internal_repr``, ``_group_decomposed_search_space``)
touches this file alone, and the equality test says when it happens.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace, _SearchSpaceGroup
from optuna.trial import FrozenTrial, TrialState

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A search space's parameters, in order: the key of the rows converted for it.
_SpaceKey = tuple[tuple[str, BaseDistribution], ...]


class _IncrementalGroups(_GroupDecomposedSearchSpace):
    """The grouped search space, each finished trial's distributions added once.

    Adding a trial's distributions again leaves the groups (and their order) as they are, so
    adding only the trials not yet seen gives what Optuna's full pass gives."""

    def __init__(self) -> None:
        super().__init__(include_pruned=True)  # as TPESampler(group=True) builds it
        self._seen: set[int] = set()

    def calculate(self, study: optuna.Study, use_cache: bool = False) -> _SearchSpaceGroup:
        if self._study_id is None:
            self._study_id = study._study_id
        elif self._study_id != study._study_id:
            raise ValueError("a sampler's search space follows one study; make one per study")
        for trial in study._get_trials(deepcopy=False, states=_FINISHED, use_cache=use_cache):
            if trial._trial_id not in self._seen:
                self._seen.add(trial._trial_id)
                self._search_space.add_distributions(trial.distributions)
        return copy.deepcopy(self._search_space)


class CachedTPESampler(optuna.samplers.TPESampler):
    """``TPESampler`` that converts each finished trial's parameters once per search space."""

    def __init__(self, **kwargs: Any) -> None:
        with warnings.catch_warnings():  # multivariate and group are "experimental" since 2.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(**kwargs)
        if self._group_decomposed_search_space is not None:
            self._group_decomposed_search_space = _IncrementalGroups()
        # (search space, trial id) -> the trial's parameters in internal form, None when the
        # trial lacks one of the space's parameters (TPE leaves it out).
        self._rows: dict[_SpaceKey, dict[int, tuple[Any, ...] | None]] = {}

    def _get_internal_repr(
        self,
        trials: list[FrozenTrial],
        search_space: dict[str, BaseDistribution],
        study: optuna.Study,
    ) -> dict[str, np.ndarray]:
        rows_of = self._rows.setdefault(tuple(search_space.items()), {})
        rows: list[tuple[Any, ...]] = []
        for trial in trials:
            if trial._trial_id in rows_of:
                row = rows_of[trial._trial_id]
            else:
                params = self._get_params(trial, study)
                row = (
                    tuple(d.to_internal_repr(params[n]) for n, d in search_space.items())
                    if search_space.keys() <= params.keys()
                    else None
                )
                if trial.state.is_finished():  # a running trial's (constant liar) may change
                    rows_of[trial._trial_id] = row
            if row is not None:
                rows.append(row)
        # One array per parameter built from its column, as Optuna builds it (same dtypes).
        return {name: np.asarray([row[i] for row in rows]) for i, name in enumerate(search_space)}
