"""Longer fine-tuning for the front's most compressed members, as trials of the same study.

A search fine-tunes every trial briefly (the space's ``finetune.epochs``), so it can try many
plans; the smallest members of the front are then limited by accuracy that more fine-tuning
recovers (LeNet-5 near 400x: docs/BENCHMARKS.md). Every ``every`` finished trials, this
callback queues one front member again, with its parameters unchanged, to be fine-tuned for
``epochs`` instead: the smallest member within ``window`` of the baseline's accuracy that has
not been refined yet. The refined trial is an ordinary trial (Optuna's ``enqueue_trial``), so
it counts against the budget, lands on the front if it is better, survives a crash like any
trial, and any worker of the study may run it.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

# The user attribute of a refined trial: the number of the trial whose parameters it reruns.
REFINE_OF = "refine_of"
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Refiner:
    """Optuna callback: queue the next front member to refine when one is due."""

    every: int  # finished trials per refined trial
    window: float  # absolute accuracy below the baseline's within which a member is worth it
    baseline_accuracy: float
    total_trials: int  # the study's budget: nothing is queued that could not run

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in _FINISHED for t in trials)
        refines = [t for t in trials if REFINE_OF in t.user_attrs]
        # The first after 2 x every trials: the front of the first few is not worth refining.
        if len(refines) >= finished // self.every - 1 or finished >= self.total_trials:
            return
        pick = self.candidate(study, {t.user_attrs[REFINE_OF] for t in refines})
        if pick is not None:
            study.enqueue_trial(pick.params, user_attrs={REFINE_OF: pick.number})

    def candidate(self, study: optuna.Study, refined: set[int]) -> FrozenTrial | None:
        """The smallest unrefined front member within the window, if any."""
        floor = self.baseline_accuracy - self.window
        members = [
            t
            for t in study.best_trials
            if REFINE_OF not in t.user_attrs and t.number not in refined and t.values[0] >= floor
        ]
        return min(members, key=lambda t: t.values[1], default=None)
