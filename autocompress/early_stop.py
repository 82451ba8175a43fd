"""Stopping a trial once it cannot finish within ``max_drop`` of the baseline's accuracy.

Most trials of a long search end far below the baseline (the LeNet-5 searches of
docs/BENCHMARKS.md: median 4.2 points, a third more than 5), where no one wants a model, yet
each costs a full fine-tuning. How much a trial can still gain after epoch ``k`` is learned
from the study itself: the largest gain from epoch ``k`` to the end that any complete trial of
the same fine-tuning schedule made. A trial whose accuracy after epoch ``k``, plus that gain
and half a point, is still below ``baseline - max_drop`` is stopped. The curves live in the
study (a user attribute of each complete trial), so every worker of a shared study learns
from all of them and a resumed study keeps what it learned.

Optuna's pruners do not work with several objectives; the objective raises
``optuna.TrialPruned`` itself, and TPE counts a stopped trial among its worse ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from autocompress.plan import FinetunePlan

# The user attribute of a complete trial: its validation accuracy after each epoch.
CURVE = "val_curve"
# Complete trials of the same schedule needed before any is stopped: the largest gain of
# fewer is too likely to be beaten by the next trial.
MIN_HISTORY = 10
# Added to the largest gain seen (absolute accuracy): a trial must miss by more than this.
SLACK = 0.005


@dataclass(frozen=True)
class Allowance:
    """What a trial may still gain after each epoch, and the accuracy it must be able to reach."""

    floor: float  # baseline accuracy - max_drop
    gains: tuple[float, ...]  # gains[k - 1]: the most gained after epoch k; () = none known

    def hopeless(self, epoch: int, accuracy: float) -> bool:
        """True when ``accuracy`` after ``epoch`` cannot end at or above the floor."""
        if not 1 <= epoch <= len(self.gains):
            return False
        return accuracy + self.gains[epoch - 1] + SLACK < self.floor


class Gains:
    """The largest gain after each epoch, per fine-tuning schedule (epochs, prune schedule: a
    gradual ramp gains later than one-shot masks), folded in one complete trial at a time.
    A search keeps one and folds in only the trials it has not read (``read``): re-reading
    every complete trial for every new one cost 2.5 ms a trial at 2,500 trials, and growing."""

    def __init__(self) -> None:
        self._count: dict[tuple[int, str], int] = {}
        self._gains: dict[tuple[int, str], tuple[float, ...]] = {}
        self._read: set[int] = set()

    def add(self, trial: FrozenTrial) -> None:
        """Fold in ``trial`` if it is complete and has a learning curve."""
        curve = trial.user_attrs.get(CURVE, ())
        if trial.state != TrialState.COMPLETE or not curve:
            return
        schedule = trial.user_attrs.get("plan", {}).get("finetune", {}).get("prune_schedule")
        key = (len(curve), str(schedule))
        gains = tuple(curve[-1] - curve[k] for k in range(len(curve)))
        seen = self._gains.get(key)
        self._gains[key] = gains if seen is None else tuple(map(max, seen, gains))
        self._count[key] = self._count.get(key, 0) + 1

    def read(self, trials: Iterable[FrozenTrial]) -> None:
        """Fold in the finished ones of ``trials`` not read before (by trial id)."""
        for trial in trials:
            if trial.state.is_finished() and trial._trial_id not in self._read:
                self._read.add(trial._trial_id)
                self.add(trial)

    def allowance(self, finetune: FinetunePlan, floor: float) -> Allowance:
        key = (finetune.epochs, finetune.prune_schedule)
        if self._count.get(key, 0) < MIN_HISTORY:
            return Allowance(floor, ())
        return Allowance(floor, self._gains[key])


def learn_allowance(
    trials: Iterable[FrozenTrial], finetune: FinetunePlan, floor: float
) -> Allowance:
    """The largest gains after each epoch among complete trials fine-tuned like ``finetune``."""
    gains = Gains()
    for trial in trials:
        gains.add(trial)
    return gains.allowance(finetune, floor)
