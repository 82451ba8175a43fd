"""The cached TPE sampler draws what Optuna's TPE draws, converting each trial once, and past
its window models the recent trials and the front."""

from __future__ import annotations

import copy
import math
import warnings
from collections import Counter
from collections.abc import Iterator

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.samplers._tpe import sampler as tpe_module
from optuna.search_space.group_decomposed import _SearchSpaceGroup
from optuna.storages import InMemoryStorage
from optuna.study import StudyDirection
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials
from optuna.trial import FrozenTrial, TrialState

from autocompress.study import TPE_WINDOW, make_sampler
from autocompress.tpe import CachedTPESampler, ParetoFront


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


@pytest.mark.parametrize(("seed", "window"), [(0, None), (1, None), (0, 60)])
def test_draws_what_optunas_tpe_draws(seed: int, window: int | None) -> None:
    """Also within its window: up to ``window`` finished trials, nothing is left out."""
    ours = run(CachedTPESampler(seed=seed, multivariate=True, group=True, window=window), 60)
    theirs = run(plain_tpe(seed), 60)
    assert [t.state for t in ours] == [t.state for t in theirs]
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in ours)  # both kinds seen
    assert any("distill/alpha" not in t.params for t in ours)  # the conditional group too
    assert [t.params for t in ours] == [t.params for t in theirs]


def test_is_the_default() -> None:
    sampler = make_sampler("tpe", 0)
    assert isinstance(sampler, CachedTPESampler)
    assert sampler._window == TPE_WINDOW


def test_past_its_window_models_the_recent_trials_and_the_front(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[int, list[int]] = {}  # trial number -> the finished trials its draw split
    inner = tpe_module._split_trials

    def recorded(study: optuna.Study, trials: list[FrozenTrial], n_below: int) -> object:
        drawing = study.get_trials(deepcopy=False)[-1].number  # the study's own trials
        seen.setdefault(drawing, [t.number for t in trials])
        return inner(study, trials, n_below)

    monkeypatch.setattr(tpe_module, "_split_trials", recorded)
    window = 15
    trials = run(CachedTPESampler(seed=0, multivariate=True, group=True, window=window), 60)
    checked = kept_older = 0
    for number, modelled in seen.items():
        before = [t for t in trials[:number] if t.state.is_finished()]
        if len(before) <= window:
            assert modelled == [t.number for t in before]
            continue
        recent = before[-window:]
        front = pareto_front(before)
        assert modelled == sorted({t.number for t in recent} | {t.number for t in front})
        kept_older += any(t.number < recent[0].number for t in front)
        checked += 1
    assert checked > 30
    assert kept_older > 10  # the front's older members stayed in the model


def pareto_front(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Optuna's Pareto front of the complete trials."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return _get_pareto_front_trials_by_trials(complete, [StudyDirection.MINIMIZE] * 2)


def test_front_is_optunas_front_one_trial_at_a_time() -> None:
    trials = run(optuna.samplers.RandomSampler(seed=3), 80)
    tie = copy.deepcopy(pareto_front(trials)[0])  # a tie with a front member joins the front
    tie._trial_id = tie.number = 10_000
    trials.append(tie)
    front = ParetoFront([StudyDirection.MINIMIZE, StudyDirection.MINIMIZE])
    for n in range(0, len(trials), 7):
        front.update(trials[: n + 7])
        assert sorted(front.trials) == sorted(t._trial_id for t in pareto_front(trials[: n + 7]))
    assert 10_000 in front.trials


def test_front_follows_each_directions_sign() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values in ([0.9, 5.0], [0.8, 1.0], [0.7, 2.0], [0.95, 9.0]):
        study.add_trial(optuna.trial.create_trial(values=values))
    front = ParetoFront(study.directions)
    front.update(study.get_trials())
    assert sorted(t.number for t in front.trials.values()) == [0, 1, 3]


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window must be a positive number of trials, got 0"):
        CachedTPESampler(window=0)


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


def test_draws_read_no_trials_from_the_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """The running trials come from the trials the ask already read: Optuna's TPE with the
    constant liar reads all trials again in each draw (one per group of parameters), which cost
    1.8 ms per trial on SQLite."""
    reads = Counter[str]()
    read, draw = InMemoryStorage.get_all_trials, optuna.samplers.TPESampler._sample

    def counted_read(self: InMemoryStorage, *args: object, **kwargs: object) -> object:
        reads[f"{sampler_name} reads"] += 1
        return read(self, *args, **kwargs)  # type: ignore[arg-type]

    def counted_draw(self: optuna.samplers.TPESampler, *args: object) -> object:
        reads[f"{sampler_name} draws"] += 1
        return draw(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(InMemoryStorage, "get_all_trials", counted_read)
    monkeypatch.setattr(optuna.samplers.TPESampler, "_sample", counted_draw)
    sampler_name = "ours"
    ours = run(CachedTPESampler(seed=0, multivariate=True, group=True), 30)
    sampler_name = "theirs"
    theirs = run(plain_tpe(0), 30)
    assert [t.params for t in ours] == [t.params for t in theirs]
    assert reads["ours draws"] == reads["theirs draws"] > 20  # TPE's, after 10 random trials
    assert reads["theirs reads"] - reads["ours reads"] == reads["theirs draws"]


def test_adds_each_finished_trial_to_the_groups_once(monkeypatch: pytest.MonkeyPatch) -> None:
    added: list[frozenset[str]] = []
    inner = _SearchSpaceGroup.add_distributions

    def counted(self: _SearchSpaceGroup, distributions: dict[str, object]) -> None:
        added.append(frozenset(distributions))
        inner(self, distributions)  # type: ignore[arg-type]

    monkeypatch.setattr(_SearchSpaceGroup, "add_distributions", counted)
    trials = run(CachedTPESampler(seed=0, multivariate=True, group=True), 30)
    assert len(added) == sum(t.state.is_finished() for t in trials[:-1])  # the last: no draw after
