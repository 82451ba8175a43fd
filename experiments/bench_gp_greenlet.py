"""Benchmark: GP's time per trial's parameters with and without ``greenlet``.

    python experiments/bench_gp_greenlet.py STUDY_DIR [--sizes 50,100,300] [--repeats 5]

Optuna's GP sampler optimizes its acquisition function from many starting points; with the
``greenlet`` package it runs them as one batch (one vectorized torch evaluation per step),
without it one after another, and says so in a warning ("falling back to sequential
L-BFGS-B"). STUDY_DIR holds a finished search's ``optuna.db``; its first N finished trials are
copied into an in-memory study per size N and one new trial's parameters are drawn by
``make_sampler("gp", 0)`` ``--repeats`` times (median), in two child processes that differ
only in whether ``greenlet`` can be imported, alternated size by size. Why: GP added about
0.6 s to each trial in the benchmarks (docs/BENCHMARKS.md), half a LeNet-300-100 trial.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import warnings
from pathlib import Path


def draw_times(study_dir: Path, size: int, repeats: int) -> list[float]:
    """Seconds per draw of GP on the study's first ``size`` finished trials (this process)."""
    import optuna
    from bench_tpe_growth import finished_trials, timed_draw

    from autocompress.study import make_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    finished, directions = finished_trials(study_dir)
    study = optuna.create_study(directions=directions, sampler=make_sampler("gp", 0))
    study.add_trials(finished[:size])
    return [timed_draw(study, finished[-1])[0] for _ in range(repeats)]


def child(study_dir: Path, size: int, repeats: int, greenlet: bool) -> float:
    """Median ms per draw in a fresh process, ``greenlet`` importable or not."""
    block = "" if greenlet else "import sys; sys.modules['greenlet'] = None; "
    code = (
        f"{block}import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from bench_gp_greenlet import draw_times; "
        f"print(json.dumps(draw_times(__import__('pathlib').Path({str(study_dir)!r}), "
        f"{size}, {repeats})))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return 1000 * statistics.median(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--sizes", default="50,100,300")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| finished trials | without greenlet, ms | with greenlet, ms | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    for size in (int(s) for s in args.sizes.split(",")):
        without = child(args.study_dir, size, args.repeats, greenlet=False)
        with_ = child(args.study_dir, size, args.repeats, greenlet=True)
        print(f"| {size} | {without:.0f} | {with_:.0f} | {without / with_:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
