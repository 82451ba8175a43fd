"""The cached TPE sampler draws what Optuna's TPE draws, converting each trial once."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterator

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.search_space.group_decomposed import _SearchSpaceGroup

from autocompress.study import make_sampler
from autocompress.tpe import CachedTPESampler


def objective(trial: optuna.Trial) -> tuple[float, float]:
    """Two objectives over a space shaped like autocompress's: per-layer bits (categorical),
    kept fractions (log floats), a conditional group (distillation) and stopped trials."""
    bits = [trial.suggest_categorical(f"bits/l{i}", [2, 4, 8]) for i in range(3)]
    keep = [trial.suggest_float(f"keep/l{i}", 1e-3, 1.0, log=True) for i in range(3)]
    loss = 0.0
    if trial.suggest_categorical("distill", [True, False]):
        loss += abs(trial.suggest_float("distill/alpha", 0.0, 1.0) - 0.7)
    size = sum(b * k for b, k in zip(bits, keep, strict=True))
    error = loss + sum(1 / (b * math.sqrt(k)) for b, k in zip(bits, keep, strict=True))
    if error > 6:
        raise optuna.TrialPruned()
    return error, size


def run(sampler: optuna.samplers.BaseSampler, trials: int) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=trials)
    return study.get_trials()


def plain_tpe(seed: int) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_draws_what_optunas_tpe_draws(seed: int) -> None:
    ours = run(CachedTPESampler(seed=seed, multivariate=True, group=True), 60)
    theirs = run(plain_tpe(seed), 60)
    assert [t.state for t in ours] == [t.state for t in theirs]
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in ours)  # both kinds seen
    assert any("distill/alpha" not in t.params for t in ours)  # the conditional group too
    assert [t.params for t in ours] == [t.params for t in theirs]


def test_is_the_default() -> None:
    assert isinstance(make_sampler("tpe", 0), CachedTPESampler)


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """How many parameter values each distribution kind converted to internal form."""
    counts: Counter[str] = Counter()
    for kind in (FloatDistribution, CategoricalDistribution):
        inner = kind.to_internal_repr

        def counted(self: object, value: object, inner: object = inner, name: str = kind.__name__):
            counts[name] += 1
            return inner(self, value)  # type: ignore[operator]

        monkeypatch.setattr(kind, "to_internal_repr", counted)
    yield counts


def test_converts_each_finished_trial_once_per_space(conversions: Counter[str]) -> None:
    run(CachedTPESampler(seed=0, multivariate=True, group=True), 40)
    ours = sum(conversions.values())
    conversions.clear()
    run(plain_tpe(0), 40)
    theirs = sum(conversions.values())
    # Each trial converted for each sub-space it belongs to (a few per trial) against every
    # finished trial again on every draw (grows with the square of the trials).
    assert ours < 40 * 10 * 3
    assert theirs > 5 * ours


def test_adds_each_finished_trial_to_the_groups_once(monkeypatch: pytest.MonkeyPatch) -> None:
    added: list[frozenset[str]] = []
    inner = _SearchSpaceGroup.add_distributions

    def counted(self: _SearchSpaceGroup, distributions: dict[str, object]) -> None:
        added.append(frozenset(distributions))
        inner(self, distributions)  # type: ignore[arg-type]

    monkeypatch.setattr(_SearchSpaceGroup, "add_distributions", counted)
    trials = run(CachedTPESampler(seed=0, multivariate=True, group=True), 30)
    assert len(added) == sum(t.state.is_finished() for t in trials[:-1])  # the last: no draw after
