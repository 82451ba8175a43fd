"""Optuna's TPE sampler, with the per-trial work it redoes for every finished trial done once.

TPE draws a trial's parameters from all finished trials, and Optuna 5 rebuilds two things
from every one of them on each draw: the grouped search space (each trial's distributions
added again) and each trial's parameters in internal form (one ``to_internal_repr`` per
parameter). A finished trial never changes, so both are kept here per trial. Over a 60-minute
LeNet-300-100 search (2,685 trials) a draw grew from 4.4 to 35 ms, a quarter of a 1.3 s
trial's time outside fine-tuning at the end (docs/BENCHMARKS.md); overnight searches run ten
times as many trials. The draws are identical to ``TPESampler``'s with the same seed
(tests/test_tpe.py compares them): only repeated work is kept, the model is unchanged.
A draw also reads the running trials from what its ``ask`` already read, not from the
storage again (``_DrawnStudy``).

Even cached, TPE's model grows with the study: each draw splits all finished trials into good
and bad (a non-dominated sort) and scores 24 candidates under one kernel per bad trial, about
8 ms more per 1,000 trials here, which put LeNet-300-100's share of time outside fine-tuning
over 5% past 1,000 trials. ``window`` bounds it: past that many finished trials, TPE models
the most recent ``window`` plus every trial on the Pareto front of all of them, so the good
group still holds the best ever found and the bad group what the search tried lately. TPE
already weights its bad group by age (``default_weights``: the oldest trial weighs 1/n), so
the trials dropped are the ones it counted least. Up to ``window`` finished trials the draws
are Optuna's own.

This module and ``study.make_sampler`` are the only ones that know TPE's internals, so a
change in Optuna's private names (``_get_internal_repr``, ``_group_decomposed_search_space``,
``_sample``, ``Study._get_trials``, ``_multi_objective._dominates``) touches this file alone,
and the tests say when it happens.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Container, Sequence
from typing import Any, cast

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace, _SearchSpaceGroup
from optuna.study._multi_objective import _dominates
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


class ParetoFront:
    """The non-dominated finished trials of a study, updated one new trial at a time (a
    dominated trial stays dominated, so the front never needs the whole study again).
    Domination is Optuna's own, as its ``best_trials`` uses it."""

    def __init__(self, directions: Sequence[optuna.study.StudyDirection]) -> None:
        self._directions = list(directions)
        self.trials: dict[int, FrozenTrial] = {}  # trial id -> trial on the front
        self._seen: set[int] = set()

    def update(self, finished: Sequence[FrozenTrial]) -> None:
        """Adds the complete trials of ``finished`` not seen before."""
        for trial in finished:
            if trial._trial_id in self._seen:
                continue
            self._seen.add(trial._trial_id)
            if trial.state != TrialState.COMPLETE:
                continue
            members = self.trials.values()
            if any(_dominates(other, trial, self._directions) for other in members):
                continue
            self.trials = {
                i: other
                for i, other in self.trials.items()
                if not _dominates(trial, other, self._directions)
            }
            self.trials[trial._trial_id] = trial


class _DrawnStudy:
    """A study as one TPE draw sees it: its finished trials are only ``finished``; its running
    ones (constant liar, Optuna 5's default) come from the trials this ``ask`` already read
    (Optuna's per-trial cache), and everything else is the study's own.

    With the constant liar, Optuna's TPE reads the storage again for the running trials in
    each draw (one per group of parameters), a few milliseconds after the same ``ask`` read
    them all: 1.8 ms per read on SQLite, a third of LeNet-300-100's draws in a 150-trial search
    (docs/BENCHMARKS.md). A worker's trial started in between is seen by the next draw."""

    def __init__(self, study: optuna.Study, finished: list[FrozenTrial]) -> None:
        self._study = study
        self._finished = finished

    def _get_trials(
        self, deepcopy: bool, states: Container[TrialState] | None, use_cache: bool
    ) -> list[FrozenTrial]:
        trials = [t for t in self._finished if states is None or t.state in states]
        if states is None or TrialState.RUNNING in states:
            running = (TrialState.RUNNING,)
            trials += self._study._get_trials(deepcopy=deepcopy, states=running, use_cache=True)
            trials.sort(key=lambda t: t.number)
        return trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class CachedTPESampler(optuna.samplers.TPESampler):
    """``TPESampler`` that converts each finished trial's parameters once per search space,
    and past ``window`` finished trials models the recent ones and the front."""

    def __init__(self, *, window: int | None = None, **kwargs: Any) -> None:
        with warnings.catch_warnings():  # multivariate and group are "experimental" since 2.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(**kwargs)
        if window is not None and window < 1:
            raise ValueError(f"window must be a positive number of trials, got {window}")
        self._window = window
        self._front: ParetoFront | None = None
        self._front_study_id: int | None = None
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

    def _sample(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        finished = study._get_trials(deepcopy=False, states=_FINISHED, use_cache=True)
        if self._window is not None and len(finished) > self._window:
            finished = self.modelled_trials(study, finished)
        drawn = cast(optuna.Study, _DrawnStudy(study, finished))
        return super()._sample(drawn, trial, search_space)

    def modelled_trials(
        self, study: optuna.Study, finished: list[FrozenTrial]
    ) -> list[FrozenTrial]:
        """The last ``window`` of ``finished`` (in trial order) and the older front members."""
        assert self._window is not None
        if self._front is None:
            self._front = ParetoFront(study.directions)
            self._front_study_id = study._study_id
        elif self._front_study_id != study._study_id:
            raise ValueError("a sampler's front follows one study; make one per study")
        self._front.update(finished)
        recent = finished[-self._window :]
        first = recent[0].number
        older = sorted(
            (t for t in self._front.trials.values() if t.number < first), key=lambda t: t.number
        )
        return older + recent
