"""Benchmark: the database writes of one trial, in several ways of writing them.

    python experiments/bench_trial_writes.py [--trials 40] [--rounds 3]
    python experiments/bench_trial_writes.py --modes unbatched,batched [--postgres URL]

Replays a search's bookkeeping without the training: Optuna's ask (TPE, multivariate), the
trial's 9 suggestions (LeNet-300-100's default space), its 5 user attributes and the tell; and
MLflow's trial run as ``TrialRun`` writes it (10 epochs held back, then the run, its
parameters and final metrics, plan.json and the compressed file, its end). Modes: ``rollback``
(SQLite's rollback journal), ``unbatched`` (WAL, every write its own transaction), ``batched``
(WAL, the parameters and plan in one transaction and the results in another, as a search
writes them). With ``--postgres`` the study is on that server (a new study per run) and
MLflow stays on SQLite. Each mode runs in a fresh process on fresh files in the same temporary
directory, alternated round by round; medians per trial of all rounds' trials after the first
10 (TPE's random start-up is cheaper).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("rollback", "unbatched", "batched")


def one_run(mode: str, trials: int, directory: Path, postgres: str) -> dict[str, list[float]]:
    """Per-trial milliseconds of each part, in this process."""
    from contextlib import AbstractContextManager, nullcontext

    import optuna

    import autocompress.storage
    import autocompress.tracking
    from autocompress.storage import batched_writes, open_storage
    from autocompress.tracking import Tracker

    if mode == "rollback":  # the code before WAL: no pragmas on any connection
        autocompress.storage.use_wal = lambda: None  # type: ignore[attr-defined]
        autocompress.tracking.use_wal = lambda: None  # type: ignore[attr-defined]

    def held(trial: optuna.Trial) -> AbstractContextManager[None]:
        return batched_writes(trial) if mode == "batched" else nullcontext()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = postgres or f"sqlite:///{directory / 'optuna.db'}"
    storage = open_storage(url, heartbeat_s=10)
    sampler = optuna.samplers.TPESampler(multivariate=True, seed=0)
    study = optuna.create_study(
        storage=storage, directions=["maximize", "minimize"], sampler=sampler,
        study_name=f"bench-{directory.name}",
    )  # fmt: skip
    tracker = Tracker(f"sqlite:///{directory / 'mlflow.db'}", "bench", directory / "art")
    parent = tracker.open_parent(None, "bench")
    packed = directory / "model.acz"
    packed.write_bytes(bytes(4000))
    times: dict[str, list[float]] = {"optuna": [], "mlflow": []}
    for number in range(trials):
        start = time.perf_counter()
        trial = study.ask()
        with held(trial):
            for layer in ("fc1", "fc2", "fc3"):
                trial.suggest_categorical(f"bits/{layer}", [2, 3, 4, 5, 6, 8])
                trial.suggest_float(f"keep/{layer}", 0.001, 1.0, log=True)
            trial.suggest_float("distill/temperature", 1.0, 8.0)
            trial.suggest_float("distill/alpha", 0.1, 0.95)
            trial.suggest_float("finetune/lr", 1e-4, 1e-2, log=True)
            for key in ("plan", "summary"):
                trial.set_user_attr(key, {"value": number})
        with held(trial):
            for key in ("mlflow_run_id", "time_finetune_s", "val_curve"):
                trial.set_user_attr(key, {"value": number})
        study.tell(trial, [0.9 + number / 1e4, 1e5 - number])
        optuna_s = time.perf_counter() - start
        start = time.perf_counter()
        run = tracker.trial_run(parent, number, trial.params, {"layers": {}}, lambda _: None)
        for epoch in range(1, 11):
            run.log_epoch({"val_accuracy": 0.9, "train_loss": 0.1}, step=epoch)
        metrics = {f"metric_{i}": float(i) for i in range(12)}
        run.end("FINISHED", {"state": "COMPLETE"}, metrics, files=[packed])
        times["optuna"].append(1000 * optuna_s)
        times["mlflow"].append(1000 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help=f"some of {', '.join(MODES)}")
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL for the study")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, directory = args.child
        print(json.dumps(one_run(mode, args.trials, Path(directory), args.postgres)))
        return
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        parser.error(f"--modes: {', '.join(sorted(unknown))} not among {', '.join(MODES)}")
    results: dict[str, dict[str, list[float]]] = {m: {"optuna": [], "mlflow": []} for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for mode in modes:
                directory = Path(tmp) / f"{mode}-{round_}"
                directory.mkdir()
                command = [sys.executable, __file__, "--trials", str(args.trials)]
                command += ["--postgres", args.postgres]
                out = subprocess.run(
                    [*command, "--child", mode, str(directory)],
                    check=True, capture_output=True, text=True, cwd=REPO,
                )  # fmt: skip
                for part, values in json.loads(out.stdout.splitlines()[-1]).items():
                    results[mode][part].extend(values[10:])
    print(f"median ms per trial, {args.rounds} rounds x {args.trials - 10} trials per mode")
    print(f"{'mode':<10} {'optuna':>8} {'mlflow':>8} {'total':>8}")
    for mode, parts in results.items():
        totals = [a + b for a, b in zip(parts["optuna"], parts["mlflow"], strict=True)]
        optuna_ms, mlflow_ms, total_ms = map(statistics.median, (*parts.values(), totals))
        print(f"{mode:<10} {optuna_ms:>8.1f} {mlflow_ms:>8.1f} {total_ms:>8.1f}")


if __name__ == "__main__":
    main()
