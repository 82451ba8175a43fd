"""Benchmark: how the default sampler's time per trial grows with the study's size.

    python experiments/bench_tpe_growth.py STUDY_DIR [--sizes 300,1000,2000,2847]

STUDY_DIR holds a finished search's ``optuna.db`` (e.g. one of bench_search.py's 60-minute
LeNet-300-100 runs). Its first N finished trials are copied into an in-memory study for each
size N, and one new trial's parameters are drawn 5 times (median) by Optuna's ``TPESampler``,
by ``autocompress.tpe.CachedTPESampler`` without a window (the same settings and seed; its
draws must be Optuna's) and by the default (the cached sampler with its window of
``study.TPE_WINDOW`` finished trials: the same draws up to the window, its own past it),
alternated. Why: the share of a trial spent outside fine-tuning rose from 65 to 118 ms per
trial over a 2,685-trial search (docs/BENCHMARKS.md); this separates the sampler's part from
the databases', and measures what keeping each finished trial's conversions and bounding the
modelled trials buy.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autocompress.study import TPE_WINDOW, make_sampler
from autocompress.tpe import CachedTPESampler


def finished_trials(
    study_dir: Path,
) -> tuple[list[optuna.trial.FrozenTrial], list[optuna.study.StudyDirection]]:
    """A finished search's finished trials, in order, and its directions."""
    url = f"sqlite:///{study_dir / 'optuna.db'}"
    source = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    finished = [t for t in source.get_trials(deepcopy=False) if t.state.is_finished()]
    return finished, list(source.directions)


def timed_draw(study: optuna.Study, trial_like: optuna.trial.FrozenTrial) -> tuple[float, dict]:
    """Seconds to draw one new trial's parameters (those of ``trial_like``), and the draw. The
    trial is then told FAIL, so the sampler never counts it."""
    start = time.perf_counter()
    trial = study.ask(fixed_distributions=trial_like.distributions)
    seconds = time.perf_counter() - start
    study.tell(trial, state=TrialState.FAIL)
    return seconds, trial.params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--sizes", default="300,1000,2000,2847")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    finished, directions = finished_trials(args.study_dir)
    print(f"{len(finished)} finished trials in {args.study_dir}")
    print(
        f"| trials | TPESampler, ms | CachedTPESampler, ms | ratio | same draws "
        f"| the default (window {TPE_WINDOW}), ms | ratio to TPESampler |"
    )
    print("| ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for size in (int(s) for s in args.sizes.split(",")):
        samplers = {
            "optuna": plain_tpe(0),
            "cached": CachedTPESampler(seed=0, multivariate=True, group=True),
            "default": make_sampler("tpe", 0, 5000),
        }
        studies = {}
        for name, sampler in samplers.items():
            studies[name] = optuna.create_study(directions=directions, sampler=sampler)
            studies[name].add_trials(finished[:size])
        seconds: dict[str, list[float]] = {name: [] for name in studies}
        draws: dict[str, list[dict[str, object]]] = {name: [] for name in studies}
        for _ in range(args.repeats):  # alternated, so a noisy moment hits all
            for name, study in studies.items():
                took, params = timed_draw(study, finished[-1])
                seconds[name].append(took)
                draws[name].append(params)
        plain, cached, default = (
            1000 * statistics.median(seconds[n]) for n in ("optuna", "cached", "default")
        )
        same = "yes" if draws["optuna"] == draws["cached"] else "NO"
        print(
            f"| {size} | {plain:.1f} | {cached:.1f} | {plain / cached:.2f}x | {same} "
            f"| {default:.1f} | {plain / default:.2f}x |"
        )


def plain_tpe(seed: int) -> optuna.samplers.TPESampler:
    """Optuna's own sampler with the default's settings: the reference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


if __name__ == "__main__":
    main()
