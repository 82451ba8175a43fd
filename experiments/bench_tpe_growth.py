"""Benchmark: how the default sampler's time per trial grows with the study's size.

    python experiments/bench_tpe_growth.py STUDY_DIR [--sizes 300,1000,2000,2685]

STUDY_DIR holds a finished search's ``optuna.db`` (e.g. one of bench_search.py's 60-minute
LeNet-300-100 runs). Its first N finished trials are copied into an in-memory study for each
size N, and one new trial's parameters are drawn by the default sampler (TPE, as
``autocompress.study.make_sampler`` builds it), 5 times, median. Why: the share of a trial
spent outside fine-tuning rose from 65 to 118 ms per trial over a 2,685-trial search
(docs/BENCHMARKS.md); this separates the sampler's part from the databases'.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autocompress.study import make_sampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--sizes", default="300,1000,2000,2685")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = f"sqlite:///{args.study_dir / 'optuna.db'}"
    source = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    finished = [t for t in source.get_trials(deepcopy=False) if t.state.is_finished()]
    distributions = finished[-1].distributions
    print(f"{len(finished)} finished trials in {args.study_dir}")
    for size in (int(s) for s in args.sizes.split(",")):
        study = optuna.create_study(
            directions=source.directions, sampler=make_sampler("tpe", 0, 5000)
        )
        study.add_trials(finished[:size])
        seconds = []
        for _ in range(5):
            start = time.perf_counter()
            trial = study.ask(fixed_distributions=distributions)
            seconds.append(time.perf_counter() - start)
            study.tell(trial, state=TrialState.FAIL)  # not counted by the sampler
        median_ms = 1000 * statistics.median(seconds)
        print(f"  {size:>5} trials: one trial's parameters drawn in {median_ms:.1f} ms")


if __name__ == "__main__":
    main()
