"""The file format alone: a finished search's front members re-written in the current format.

    PYTHONPATH=. python experiments/bench_format.py RUN_DIR [RUN_DIR ...]

RUN_DIR is a search's ``--out`` (``optuna.db``, ``pareto.csv`` and ``models/``). Every front
member's file is re-written with ``artifact.upgrade`` (the same model, bit for bit: the script
checks that both load to equal outputs) and the table gives, per run, the median size change
and the largest compression ratio within 0.2, 0.5 and 1 point of the baseline's validation
accuracy, with the old sizes and with the new. The new front is recomputed over the same
members, so it is a lower bound: a dominated trial has no file to re-write.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import optuna
import torch

from autocompress.artifact import load_model, unpack, upgrade

DROPS = (0.002, 0.005, 0.01)


def best_ratio(points: list[tuple[float, int]], floor: float, float32_bytes: int) -> float | None:
    """Largest ``float32_bytes / size`` among points at or above ``floor`` accuracy."""
    sizes = [size for accuracy, size in points if accuracy >= floor - 1e-9]
    return float32_bytes / min(sizes) if sizes else None


def same_model(old: bytes, new: bytes) -> bool:
    spec = unpack(old).spec
    x = torch.randn(64, *spec.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(load_model(old)(x), load_model(new)(x))


def run_row(run: Path) -> str:
    storage = f"sqlite:///{run / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    baseline = summary.user_attrs["baseline"]
    base, float32_bytes = baseline["val_accuracy"], baseline["float32_bytes"]
    old_points, new_points, changes, versions = [], [], [], set()
    with (run / "pareto.csv").open() as handle:
        for row in csv.DictReader(handle):
            path = run / "models" / f"trial-{int(row['trial']):04d}.acz"
            if not path.is_file():
                continue
            old = path.read_bytes()
            new = upgrade(old)
            if not same_model(old, new):
                raise SystemExit(f"{path}: the re-written file gives other outputs")
            versions.add(unpack(old).format_version)
            accuracy = float(row["val_accuracy"])
            old_points.append((accuracy, len(old)))
            new_points.append((accuracy, len(new)))
            changes.append(len(new) / len(old) - 1)
    cells = [f"{run.name} (format {'/'.join(map(str, sorted(versions)))})", str(len(changes))]
    cells.append(f"{100 * statistics.median(changes):+.1f}%")
    for drop in DROPS:
        old_ratio = best_ratio(old_points, base - drop, float32_bytes)
        new_ratio = best_ratio(new_points, base - drop, float32_bytes)
        missing = old_ratio is None or new_ratio is None
        cells.append("-" if missing else f"{old_ratio:.1f}x -> {new_ratio:.1f}x")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="search output directories")
    args = parser.parse_args()
    print("| run | front files | bytes (median) | <= 0.2 pt | <= 0.5 pt | <= 1 pt |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for run in args.runs:
        print(run_row(run), flush=True)


if __name__ == "__main__":
    main()
