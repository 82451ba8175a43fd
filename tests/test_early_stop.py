"""Early stopping: what a trial may still gain, learned from the study's complete trials."""

from __future__ import annotations

import copy

from optuna.trial import FrozenTrial, TrialState, create_trial

from autocompress.early_stop import CURVE, MIN_HISTORY, SLACK, Allowance, Gains, learn_allowance
from autocompress.plan import FinetunePlan

THREE = FinetunePlan(epochs=3)


def finished(
    curve: list[float | None], schedule: str = "oneshot", state: TrialState = TrialState.COMPLETE
) -> FrozenTrial:
    plan = {"finetune": {"epochs": len(curve), "prune_schedule": schedule}}
    values = [curve[-1], 1000.0] if state == TrialState.COMPLETE else None
    return create_trial(state=state, values=values, user_attrs={CURVE: curve, "plan": plan})


def test_the_largest_gain_after_each_epoch() -> None:
    trials = [finished([0.50, 0.60, 0.70])] * (MIN_HISTORY - 1) + [finished([0.80, 0.81, 0.82])]
    allowance = learn_allowance(trials, THREE, floor=0.9)
    # after epoch 1: +0.20 (0.50 -> 0.70); after epoch 2: +0.10; after the last: nothing
    assert allowance.gains == (0.7 - 0.5, 0.7 - 0.6, 0.0)


def test_nothing_is_stopped_before_enough_trials_completed() -> None:
    few = learn_allowance([finished([0.5, 0.5, 0.5])] * (MIN_HISTORY - 1), THREE, floor=0.9)
    assert few.gains == ()
    assert not few.hopeless(1, 0.0)


def test_only_complete_trials_of_the_same_schedule_count() -> None:
    # Each of these would allow a gain of 0.4; none is like a 3-epoch one-shot trial.
    others = [
        finished([0.5, 0.6, 0.7, 0.9]),  # 4 epochs
        finished([0.5, 0.7, 0.9], schedule="gradual"),
        finished([0.5, 0.7], state=TrialState.PRUNED),
    ]
    alike = [finished([0.5, 0.55, 0.6])] * MIN_HISTORY
    allowance = learn_allowance(others * MIN_HISTORY + alike, THREE, floor=0.9)
    assert allowance.gains == (0.6 - 0.5, 0.6 - 0.55, 0.0)


def test_a_trial_is_hopeless_only_beyond_the_gain_and_the_slack() -> None:
    allowance = Allowance(floor=0.90, gains=(0.10, 0.05, 0.0))
    assert allowance.hopeless(1, 0.79)  # 0.79 + 0.10 + 0.005 < 0.90
    assert not allowance.hopeless(1, 0.80 - SLACK / 2)  # within the slack
    assert allowance.hopeless(2, 0.84)
    assert not allowance.hopeless(2, 0.85)
    assert allowance.hopeless(3, 0.89)
    assert not allowance.hopeless(4, 0.0)  # beyond the learned epochs: no verdict


def numbered(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Copies with their own trial ids, as a study's are."""
    copies = [copy.deepcopy(t) for t in trials]
    for i, trial in enumerate(copies):
        trial._trial_id = trial.number = i
    return copies


def test_a_search_reads_each_trial_once_and_learns_what_all_of_them_teach() -> None:
    alike = [finished([0.5, 0.6, 0.7])] * (MIN_HISTORY - 1)
    trials = numbered([*alike, finished([0.8, 0.9, 0.95])])
    gains = Gains()
    for _ in range(3):  # the same 9 trials again and again: still too few
        gains.read(trials[:-1])
    assert gains.allowance(THREE, floor=0.9).gains == ()
    gains.read(trials)  # a tenth: as many as learn_allowance sees at once
    assert gains.allowance(THREE, floor=0.9) == learn_allowance(trials, THREE, floor=0.9)
    assert gains.allowance(THREE, floor=0.9).gains == (0.7 - 0.5, 0.7 - 0.6, 0.0)


def test_epochs_not_validated_have_no_gain_and_stop_nothing() -> None:
    """Curves of ``validate_every: 2`` (after epochs 1, 2, 4 and 5): no value after epoch 3, so
    nothing is known and nothing stopped there; every other epoch is learned as before."""
    curve = [0.50, 0.60, None, 0.70, 0.72]
    allowance = learn_allowance([finished(curve)] * MIN_HISTORY, FinetunePlan(epochs=5), floor=0.9)
    assert allowance.gains[2] is None
    assert allowance.gains == (0.72 - 0.50, 0.72 - 0.60, None, 0.72 - 0.70, 0.0)
    assert not allowance.hopeless(3, 0.0)
    assert allowance.hopeless(4, 0.5)


def test_each_epoch_needs_its_own_history() -> None:
    """A study that validated every epoch, then every other one: epoch 3 has fewer than
    MIN_HISTORY values, so it is not judged; epoch 2 has them all."""
    every = [finished([0.5, 0.6, 0.65, 0.7])] * (MIN_HISTORY - 1)
    fewer = [finished([0.5, 0.6, None, 0.7])] * 5
    allowance = learn_allowance(every + fewer, FinetunePlan(epochs=4), floor=0.9)
    assert allowance.gains[2] is None
    assert allowance.gains[1] == 0.7 - 0.6
