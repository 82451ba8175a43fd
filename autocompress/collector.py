"""Python's cyclic garbage collector kept off what a search sets up, and run less often.

Before its first trial a search process holds about 700,000 objects the collector tracks (the
modules of torch, MLflow, SQLAlchemy and Optuna, the data, the baseline), none of them garbage
while the trials run, and each full collection walked all of them: 320-340 ms, twice in 150
LeNet-300-100 trials. Frozen (``gc.freeze``) for the trials, they are skipped; and the first
generation is collected every 20,000 allocations instead of 700, so a trial's short-lived
objects (ORM rows, MLflow entities, Optuna's copies) are mostly freed by their reference counts
before a collection looks at them. In those 150 trials the collector's pauses fell from
5.4-5.8 to 1.4 ms per trial (docs/BENCHMARKS.md); whether the long ones had landed inside
fine-tuning or outside it was chance. Both are undone after the trials, so a process that runs
several searches (tests, notebooks) still collects what it drops.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Allocations between first-generation collections while the trials run (Python's default: 700).
FIRST_GENERATION_THRESHOLD = 20_000


@contextmanager
def setup_frozen() -> Iterator[None]:
    """Within the block, the collector ignores every object alive at its start and collects
    the first generation every ``FIRST_GENERATION_THRESHOLD`` allocations."""
    gc.collect()  # garbage frozen now would never be collected
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(FIRST_GENERATION_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
