"""Re-run a finished search's front plans with this checkout's code (issue 6): the same plans,
trial seeds, data and baseline, so two code versions compare on the plans a search found.

    PYTHONPATH=$WT python $WT/experiments/bench_replay.py RUN_DIR [--within 2.0] [--sample N]

RUN_DIR is one search's output directory (its ``optuna.db``, whose study records its config:
data, baseline checkpoint, seed). Each front member within ``--within`` points of the baseline's
validation accuracy is fine-tuned again through the trial's own code (``compress``, ``fit``,
``pack``, seeded with the search's seed plus the trial number, as ``Objective`` does) and
printed next to what the search recorded. On the same machine and code a replay reproduces
the record; run it at two commits to compare them on equal plans. Front members were picked for
their recorded accuracy, so a code change that merely perturbs fine-tuning replays them lower
on average (regression to the mean); ``--sample N`` replays N complete trials drawn at random
(seeded) instead, which compares accuracy without that bias.
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import optuna
from bench_prune_schedule import run  # experiments/, the script's own directory
from optuna.trial import TrialState

from autocompress.artifact import ModelSpec
from autocompress.config import build_config
from autocompress.plan import CompressionPlan
from autocompress.study import prepare
from autocompress.teacher import prepare_baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--within", type=float, default=2.0, help="points below the baseline")
    parser.add_argument("--sample", type=int, default=0, help="N random complete trials instead")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{(args.run_dir / 'optuna.db').resolve()}"
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    recorded = study.user_attrs["config"]
    keys = ("model", "data", "checkpoint", "seed")
    config = build_config(None, {key: recorded[key] for key in keys})
    prepared = prepare(config)
    baseline = prepare_baseline(config, prepared.model, prepared.data, from_checkpoint=True)
    spec = ModelSpec(config.model, prepared.data.input_shape, prepared.data.num_classes)
    floor = baseline.val_accuracy - args.within / 100
    if args.sample:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        picked = random.Random(0).sample(complete, min(args.sample, len(complete)))
    else:
        picked = [t for t in study.best_trials if t.values[0] >= floor]
    picked.sort(key=lambda t: t.values[1])
    kind = "random complete trials" if args.sample else "front plans"
    print(f"{name}: baseline validation {baseline.val_accuracy:.2%}, {len(picked)} {kind}")
    print(
        "| trial | plan | recorded val | replay val | replay test | recorded bytes | "
        "replay bytes | bytes, replay / recorded |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    changes, shifts = [], []
    for trial in picked:
        plan = CompressionPlan.from_dict(trial.user_attrs["plan"])
        val, test, size = run(plan, baseline, prepared.data, spec, config.seed + trial.number)
        was_val, was_size = trial.values[0], int(trial.values[1])
        changes.append(size / was_size)
        shifts.append(100 * (val - was_val))
        print(
            f"| {trial.number} | {trial.user_attrs['summary']} | {was_val:.2%} | {val:.2%} | "
            f"{test:.2%} | {was_size:,} | {size:,} | {size / was_size:.3f} |",
            flush=True,
        )
    print(
        f"\nmedian bytes replay / recorded {statistics.median(changes):.3f} "
        f"[{min(changes):.3f} to {max(changes):.3f}]; validation "
        f"{statistics.median(shifts):+.2f} points [{min(shifts):+.2f} to {max(shifts):+.2f}]"
    )


if __name__ == "__main__":
    main()
