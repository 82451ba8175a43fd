"""Replay early stopping (``autocompress.early_stop``) offline on finished searches (issue 6).

    PYTHONPATH=. python experiments/bench_early_stop.py RUN_DIR... [--max-drop 5]

Each RUN_DIR is one search's output directory, run with every trial fine-tuned to the end (a
search before early stopping, or ``bench_search.py`` with ``+drop100``): its MLflow store holds
each trial's validation accuracy after every epoch. The trials are replayed in the order they
started; before each, the allowance is learned from the complete trials so far that the rule
would have let finish, exactly as ``Objective`` learns it from the study, and the trial is
stopped at the first epoch the rule calls hopeless. Printed per run: trials stopped, the share
of fine-tuning epochs saved, and the front's largest ratios within 0.2 / 0.5 / 1 point and its
hypervolume with every trial and with the stopped ones removed, and how many stopped trials
in fact ended within ``--max-drop`` (wrongly stopped). It cannot say what the sampler
would have done with the time saved, or with stopped trials counted as bad: only a search can
(``bench_search.py --samplers tpe,tpe+drop100``).
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from bench_format import best_ratio  # experiments/, the script's own directory
from bench_search import hypervolume
from optuna.trial import FrozenTrial, create_trial

from autocompress.early_stop import CURVE, learn_allowance
from autocompress.plan import FinetunePlan

THRESHOLDS = (0.2, 0.5, 1.0)  # points of validation accuracy below the baseline


def trials_of(run_dir: Path) -> tuple[float, int, list[tuple[list[float], int]]]:
    """Baseline accuracy, float32 bytes, and each complete trial's (curve, bytes) by start."""
    db = sqlite3.connect(run_dir / "mlflow.db")

    def metric(key: str) -> dict[str, float]:
        query = "select run_uuid, value from metrics where key = ?"
        return dict(db.execute(query, (key,)).fetchall())

    (base,) = metric("baseline_val_accuracy").values()
    (float32,) = metric("baseline_float32_bytes").values()
    sizes = metric("size_bytes")
    curves: dict[str, list[float]] = {}
    query = "select run_uuid, value from metrics where key = 'val_accuracy' order by step"
    for run, value in db.execute(query):
        curves.setdefault(run, []).append(value)
    starts = db.execute("select run_uuid from runs order by start_time").fetchall()
    complete = [(curves[r], int(sizes[r])) for (r,) in starts if r in sizes]
    return base, int(float32), complete


def summary(points: list[tuple[float, int]], base: float, float32: int) -> str:
    best = [best_ratio(points, base - t / 100, float32) or 0.0 for t in THRESHOLDS]
    ratios = [(acc, float32 / size) for acc, size in points]
    return " ".join(f"{r:6.1f}x" for r in best) + f"  HV {hypervolume(ratios, base):4.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--max-drop", type=float, default=5.0, help="points (5)")
    args = parser.parse_args()
    print(
        "run | trials | stopped (wrongly) | epochs saved | all: ratio <=0.2 / 0.5 / 1 pt, HV | kept"
    )
    for run_dir in args.run_dirs:
        base, float32, trials = trials_of(run_dir)
        epochs = len(trials[0][0])
        finetune = FinetunePlan(epochs=epochs)
        plan = {"finetune": {"epochs": epochs, "prune_schedule": finetune.prune_schedule}}
        floor = base - args.max_drop / 100
        finished: list[FrozenTrial] = []
        kept: list[tuple[float, int]] = []
        stopped = wrong = saved = 0
        for curve, size in trials:
            allowance = learn_allowance(finished, finetune, floor)
            hopeless = [k for k in range(1, epochs + 1) if allowance.hopeless(k, curve[k - 1])]
            if hopeless:
                stopped += 1
                wrong += curve[-1] >= floor
                saved += epochs - hopeless[0]
                continue
            kept.append((curve[-1], size))
            finished.append(
                create_trial(values=[curve[-1], size], user_attrs={CURVE: curve, "plan": plan})
            )
        everything = [(curve[-1], size) for curve, size in trials]
        share = saved / (epochs * len(trials))
        print(
            f"{run_dir.name} | {len(trials)} | {stopped} ({wrong}) | {share:.0%} | "
            f"{summary(everything, base, float32)} | {summary(kept, base, float32)}"
        )


if __name__ == "__main__":
    main()
