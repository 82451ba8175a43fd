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


def learn_allowance(
    trials: Iterable[FrozenTrial], finetune: FinetunePlan, floor: float
) -> Allowance:
    """The largest gains after each epoch among complete trials fine-tuned like ``finetune``
    (same epochs and prune schedule: a gradual ramp gains later than one-shot masks)."""
    curves = [
        curve
        for trial in trials
        if trial.state == TrialState.COMPLETE
        and len(curve := trial.user_attrs.get(CURVE, ())) == finetune.epochs
        and trial.user_attrs.get("plan", {}).get("finetune", {}).get("prune_schedule")
        == finetune.prune_schedule
    ]
    if len(curves) < MIN_HISTORY:
        return Allowance(floor, ())
    gains = tuple(max(curve[-1] - curve[k] for curve in curves) for k in range(finetune.epochs))
    return Allowance(floor, gains)
