"""Benchmark: search throughput with 1 vs 2 local workers, and Optuna's ask/tell time on a
storage that already holds 1,000 finished trials (SQLite, journal file, PostgreSQL).

    python experiments/bench_workers.py --trials 12 --rounds 2 \
        [--postgres postgresql://user:pw@127.0.0.1:5432/db]

Throughput runs the real CLI (LeNet-5 on ../shared/data/mnist by default) in fresh output
directories, alternating the configurations round by round so machine noise hits all alike,
and reports medians. The baseline is trained once first (cached), so it is not in the timings.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {  # name: (workers, torch threads per worker)
    "1 worker x 2 threads": (1, 2),
    "1 worker x 1 thread": (1, 1),
    "2 workers x 1 thread": (2, 1),
}


def search(model: str, data: str, trials: int, workers: int, threads: int, out: Path) -> float:
    """Wall seconds of the search's trials (from the CLI's own summary line)."""
    command = [
        sys.executable, "-m", "autocompress", "search", "--model", model, "--data", data,
        "--trials", str(trials), "--workers", str(workers), "--out", str(out), "--no-progress",
    ]  # fmt: skip
    # One process: OMP_NUM_THREADS sets its torch threads; K workers split the default (2).
    env_threads = {"OMP_NUM_THREADS": str(threads)} if workers == 1 else {}
    env = {**os.environ, **env_threads, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    match = re.search(r"(\d+) trials in ([\d.]+) s", result.stdout)
    assert match, result.stdout
    return float(match.group(2))


def throughput(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        search(args.model, args.data, 1, 1, 2, Path(tmp) / "warm")  # caches the baseline
        seconds: dict[str, list[float]] = {name: [] for name in CONFIGS}
        for round_ in range(args.rounds):
            for name, (workers, threads) in CONFIGS.items():
                out = Path(tmp) / f"{round_}-{workers}-{threads}"
                run = search(args.model, args.data, args.trials, workers, threads, out)
                seconds[name].append(run)
    print(f"\nthroughput: {args.model} on {args.data}, {args.trials} trials, {args.rounds} rounds")
    print(f"{'configuration':<22} {'median s':>9} {'trials/hour':>12} {'vs 1x2':>7}")
    reference = statistics.median(seconds["1 worker x 2 threads"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(
            f"{name:<22} {median:>9.1f} {3600 * args.trials / median:>12.0f} "
            f"{reference / median:>6.2f}x"
        )


DISTRIBUTIONS = {
    **{f"bits/l{i}": IntDistribution(2, 8) for i in range(4)},
    **{f"prune/l{i}": FloatDistribution(0.0, 0.98, step=0.02) for i in range(4)},
    "distill/temperature": FloatDistribution(1.0, 8.0),
    "distill/alpha": FloatDistribution(0.1, 0.95),
    "finetune/lr": FloatDistribution(1e-4, 1e-2, log=True),
}


def _draw(rng: random.Random, distribution: IntDistribution | FloatDistribution) -> float:
    if isinstance(distribution, IntDistribution):
        return rng.randint(int(distribution.low), int(distribution.high))
    value = rng.uniform(distribution.low, distribution.high)
    step = distribution.step
    return distribution.low + round((value - distribution.low) / step) * step if step else value


def ask_tell(storage: optuna.storages.BaseStorage, name: str, repeats: int) -> tuple[float, float]:
    """Median ms of one ask (TPE, multivariate) and one tell, with 1,000 finished trials."""
    from autocompress.study import make_sampler

    study = optuna.create_study(
        storage=storage, study_name=name, directions=["maximize", "minimize"],
        sampler=make_sampler("tpe", 0),
    )  # fmt: skip
    rng = random.Random(0)
    study.add_trials(
        create_trial(
            state=TrialState.COMPLETE,
            values=[rng.random(), rng.uniform(1e4, 1e6)],
            params={key: _draw(rng, d) for key, d in DISTRIBUTIONS.items()},
            distributions=DISTRIBUTIONS,
        )
        for _ in range(1000)
    )
    asks, tells = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        trial = study.ask(DISTRIBUTIONS)
        asked = time.perf_counter()
        study.tell(trial, [rng.random(), rng.uniform(1e4, 1e6)])
        asks.append(1000 * (asked - start))
        tells.append(1000 * (time.perf_counter() - asked))
    return statistics.median(asks), statistics.median(tells)


def storages(args: argparse.Namespace, tmp: Path) -> dict[str, optuna.storages.BaseStorage]:
    from optuna.storages.journal import JournalFileBackend

    found: dict[str, optuna.storages.BaseStorage] = {
        "SQLite": optuna.storages.RDBStorage(f"sqlite:///{tmp / 'bench.db'}"),
        "journal file": optuna.storages.JournalStorage(JournalFileBackend(str(tmp / "j.log"))),
    }
    if args.postgres:
        found["PostgreSQL"] = optuna.storages.RDBStorage(args.postgres)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--data", default=f"mnist:{REPO.parent / 'shared' / 'data' / 'mnist'}")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20, help="ask/tell repetitions")
    parser.add_argument("--postgres", help="a PostgreSQL URL for the ask/tell part")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not args.skip_throughput:
        throughput(args)
    print("\nask/tell with 1,000 finished trials (TPE multivariate, 11 params), median ms")
    print(f"{'storage':<14} {'ask':>8} {'tell':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, storage in storages(args, Path(tmp)).items():
            ask, tell = ask_tell(storage, f"bench-{time.time_ns()}", args.repeats)
            print(f"{name:<14} {ask:>8.1f} {tell:>8.1f}")


if __name__ == "__main__":
    main()
