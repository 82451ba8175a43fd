"""Where a trial's time goes outside fine-tuning: wall milliseconds per trial of each step.

    python experiments/bench_trial_phases.py --models lenet300 --samplers tpe --seeds 0 \
        --trials 300 --minutes 3 --no-recipes --out /tmp/phases

Takes ``bench_search.py``'s arguments and runs it with the trial's steps wrapped in wall
clocks (no profiler, whose overhead swamps steps of a few milliseconds): Optuna's sampling,
parameter and attribute writes (and their batches' commits), ask and the trial count;
MLflow's trial run; compression, packing, the weights' sparsity, latency; ``fit`` and its
validation passes (evaluation, which the issue counts outside fine-tuning); the cyclic garbage
collector's pauses while the trials run, and the part of them inside ``fit``. Prints,
after the search, the milliseconds per trial of each (total over all trials / trials),
largest first, and from 300 trials on the same for the first and the last full block of 150
trials (what grows with the study shows there); the steps nest (``objective`` holds most of
the others), so a column does not add up. Why: the issue's target is under 5% of a trial
outside fine-tuning, and the share alone does not say which step to cut.
"""

from __future__ import annotations

import atexit
import functools
import gc
import runpy
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

import autocompress.finetune
import autocompress.objective
import autocompress.space
import autocompress.storage
import autocompress.study
import autocompress.tracking

SECONDS: defaultdict[str, float] = defaultdict(float)
CALLS: Counter[str] = Counter()
# The same per block of BLOCK trials, to tell the steps that grow with the study from the rest.
BLOCK = 150
BLOCK_SECONDS: defaultdict[tuple[int, str], float] = defaultdict(float)
# Whether the trials run (study.optimize) and whether a trial fine-tunes (fit), for the collector.
ACTIVE = {"optimize": False, "fit": False}


def add(label: str, seconds: float) -> None:
    SECONDS[label] += seconds
    CALLS[label] += 1
    if ACTIVE["optimize"]:  # in the block of the trial running: the one ``ask`` last started
        BLOCK_SECONDS[(CALLS["study.ask"] - 1) // BLOCK, label] += seconds


def clock(owner: Any, name: str, label: str) -> None:
    """Replace ``owner.name`` by a wrapper that adds its wall time to ``label``."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            add(label, time.perf_counter() - start)

    setattr(owner, name, timed)


def flag(owner: Any, name: str, key: str) -> None:
    """Replace ``owner.name`` by a wrapper that sets ``ACTIVE[key]`` while it runs."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def flagged(*args: Any, **kwargs: Any) -> Any:
        ACTIVE[key] = True
        try:
            return inner(*args, **kwargs)
        finally:
            ACTIVE[key] = False

    setattr(owner, name, flagged)


def clock_collections() -> None:
    """Add the collector's pauses while the trials run to "garbage collection" (and those
    inside ``fit`` to a nested label), not the setup's or the report's."""
    started = 0.0

    def on_collection(phase: str, _info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
            return
        if not ACTIVE["optimize"]:
            return
        seconds = time.perf_counter() - started
        for label in ["garbage collection"] + (["  of it inside fit"] if ACTIVE["fit"] else []):
            add(label, seconds)

    gc.callbacks.append(on_collection)


OUTSIDE = "outside training"


def outside_training(seconds: Mapping[str, float]) -> float:
    trial, fit, passes = ("trial (ask to tell)", "fit", "validation passes")
    return seconds.get(trial, 0.0) - seconds.get(fit, 0.0) + seconds.get(passes, 0.0)


def report() -> None:
    trials = CALLS["objective"]
    if not trials:
        return
    # The count: all of a trial but training (the validation passes are evaluation),
    # from what the trials spent (not the passes before or after them): per block, then summed.
    by_block: defaultdict[int, dict[str, float]] = defaultdict(dict)
    for (block, label), seconds in BLOCK_SECONDS.items():
        by_block[block][label] = seconds
    for block, spent in by_block.items():
        BLOCK_SECONDS[block, OUTSIDE] = outside_training(spent)
    SECONDS[OUTSIDE] = sum(BLOCK_SECONDS[block, OUTSIDE] for block in by_block)
    last = trials // BLOCK - 1  # the last full block
    blocks = f"; trials 1-{BLOCK}, {last * BLOCK + 1}-{(last + 1) * BLOCK}" if last > 0 else ""
    print(f"\n{trials} trials; wall ms per trial (calls){blocks}:", file=sys.stderr)
    for label, seconds in sorted(SECONDS.items(), key=lambda item: -item[1]):
        row = f"  {label:26} {1000 * seconds / trials:8.1f}  ({CALLS[label]})"
        if last > 0:
            row += "".join(f" {1000 * BLOCK_SECONDS[b, label] / BLOCK:8.1f}" for b in (0, last))
        print(row, file=sys.stderr)


def main() -> None:
    objective = autocompress.objective
    for name in ("fit", "compress", "pack", "weight_sparsity", "materialize", "measure_latency"):
        clock(objective, name, name)
    clock(objective.Objective, "__call__", "objective")
    clock(optuna.study._optimize, "_run_trial", "trial (ask to tell)")
    # inside fit: its validation passes, evaluation outside fine-tuning in the count
    # (and the few calls outside trials: the teacher's logits, the front's test accuracy)
    clock(autocompress.finetune, "predict_logits", "validation passes")
    for name in ("log_epoch", "end"):
        clock(autocompress.tracking.TrialRun, name, f"mlflow {name}")
    clock(autocompress.space.SearchSpace, "suggest", "suggest (all parameters)")
    clock(optuna.Trial, "_suggest", "  one parameter")
    clock(optuna.Trial, "set_user_attr", "set_user_attr")
    clock(optuna.Study, "ask", "study.ask")
    clock(optuna.Study, "get_trials", "study.get_trials")
    clock(autocompress.study, "count_trials", "trial count")
    clock(autocompress.storage.BatchingRDBStorage, "_commit", "batched writes' commit")
    clock(optuna.samplers.TPESampler, "sample_relative", "TPE sample_relative")
    flag(objective, "fit", "fit")
    flag(optuna.Study, "optimize", "optimize")
    clock_collections()
    atexit.register(report)
    script = Path(__file__).with_name("bench_search.py")
    sys.argv = [str(script), *sys.argv[1:]]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
