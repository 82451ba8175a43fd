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

# The user attribute of a complete trial: its validation accuracy after each epoch (null after
# an epoch not validated: ``validate_every``).
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
    # gains[k - 1]: the most gained after epoch k; None (or none at all): not known
    gains: tuple[float | None, ...]

    def hopeless(self, epoch: int, accuracy: float) -> bool:
        """True when ``accuracy`` after ``epoch`` cannot end at or above the floor."""
        if not 1 <= epoch <= len(self.gains):
            return False
        gain = self.gains[epoch - 1]
        return gain is not None and accuracy + gain + SLACK < self.floor


class Gains:
    """The largest gain after each epoch, per fine-tuning schedule (epochs, prune schedule: a
    gradual ramp gains later than one-shot masks), folded in one complete trial at a time.
    A search keeps one and folds in only the trials it has not read (``read``): re-reading
    every complete trial for every new one cost 2.5 ms a trial at 2,500 trials, and growing.
    Epochs are counted apart: a curve holds no value after an epoch not validated."""

    def __init__(self) -> None:
        self._count: dict[tuple[int, str], list[int]] = {}
        self._gains: dict[tuple[int, str], list[float | None]] = {}
        self._read: set[int] = set()

    def add(self, trial: FrozenTrial) -> None:
        """Fold in ``trial`` if it is complete and has a learning curve."""
        curve = trial.user_attrs.get(CURVE, ())
        if trial.state != TrialState.COMPLETE or not curve or curve[-1] is None:
            return
        schedule = trial.user_attrs.get("plan", {}).get("finetune", {}).get("prune_schedule")
        key = (len(curve), str(schedule))
        gains = self._gains.setdefault(key, [None] * len(curve))
        count = self._count.setdefault(key, [0] * len(curve))
        for k, accuracy in enumerate(curve):
            if accuracy is not None:
                gain = curve[-1] - accuracy
                seen = gains[k]
                gains[k] = gain if seen is None else max(seen, gain)
                count[k] += 1

    def read(self, trials: Iterable[FrozenTrial]) -> None:
        """Fold in the finished ones of ``trials`` not read before (by trial id)."""
        for trial in trials:
            if trial.state.is_finished() and trial._trial_id not in self._read:
                self._read.add(trial._trial_id)
                self.add(trial)

    def allowance(self, finetune: FinetunePlan, floor: float) -> Allowance:
        key = (finetune.epochs, finetune.prune_schedule)
        counts = self._count.get(key, [])
        gains = self._gains.get(key, [])
        known = tuple(g if n >= MIN_HISTORY else None for g, n in zip(gains, counts, strict=True))
        return Allowance(floor, known if any(g is not None for g in known) else ())


def learn_allowance(
    trials: Iterable[FrozenTrial], finetune: FinetunePlan, floor: float
) -> Allowance:
    """The largest gains after each epoch among complete trials fine-tuned like ``finetune``."""
    gains = Gains()
    for trial in trials:
        gains.add(trial)
    return gains.allowance(finetune, floor)
