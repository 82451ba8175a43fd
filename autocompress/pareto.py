"""The Pareto front of size versus accuracy: from the study, to a table, CSV, JSON and a plot.

Optuna's ``Study.best_trials`` already is the front of a multi-objective study; this module
only shapes it for people (sorted by size, with compression ratios) and writes it out.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers or in CI
import matplotlib.pyplot as plt
import optuna

# The study attribute with the front's latencies timed after the search from their files:
# trial number -> batch size -> median ms (a trial times its own only when latency is an objective).
FRONT_LATENCY = "front_latency_ms"


@dataclass(frozen=True)
class ParetoPoint:
    trial: int
    val_accuracy: float
    test_accuracy: float | None  # measured after the search, for front members only
    size_bytes: int
    ratio: float  # float32 size of the baseline / size_bytes
    summary: str  # per layer: bits / pruned fraction
    plan: dict[str, Any]
    latency_ms: float | None = None  # batch 1, median, on the search's device


def front(study: optuna.Study) -> list[ParetoPoint]:
    """Front members sorted from smallest to largest; needs the study's ``baseline`` attr."""
    baseline = study.user_attrs["baseline"]
    tests: dict[str, float] = study.user_attrs.get("test_accuracy", {})
    timed: dict[str, dict[str, float]] = study.user_attrs.get(FRONT_LATENCY, {})
    points = [
        ParetoPoint(
            trial=t.number,
            val_accuracy=float(t.values[0]),
            test_accuracy=tests.get(str(t.number)),
            size_bytes=int(t.values[1]),
            ratio=baseline["float32_bytes"] / t.values[1],
            summary=str(t.user_attrs.get("summary", "")),
            plan=t.user_attrs.get("plan", {}),
            latency_ms=t.user_attrs.get("latency_ms", timed.get(str(t.number), {}).get("1")),
        )
        for t in study.best_trials
    ]
    return sorted(points, key=lambda p: (p.size_bytes, -p.val_accuracy))


def format_table(points: list[ParetoPoint], baseline: dict[str, Any]) -> str:
    head = (
        f"baseline: val accuracy {baseline['val_accuracy']:.2%}, "
        f"float32 {baseline['float32_bytes'] / 1024:.1f} KiB"
    )
    rows = [f"{'trial':>5}  {'val acc':>7}  {'test acc':>8}  {'size':>10}  {'ratio':>7}  layers"]
    for p in points:
        test = "-" if p.test_accuracy is None else f"{p.test_accuracy:.2%}"
        rows.append(
            f"{p.trial:>5}  {p.val_accuracy:>7.2%}  {test:>8}  "
            f"{p.size_bytes / 1024:>7.1f} KiB  {p.ratio:>6.1f}x  {p.summary}"
        )
    return "\n".join([head, *rows])


def write_csv(points: list[ParetoPoint], path: Path) -> None:
    fields = [
        "trial", "val_accuracy", "test_accuracy", "size_bytes", "ratio", "latency_ms", "summary",
    ]  # fmt: skip
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for p in points:
            writer.writerow({k: v for k, v in asdict(p).items() if k in fields})


def write_json(points: list[ParetoPoint], baseline: dict[str, Any], path: Path) -> None:
    document = {"baseline": baseline, "front": [asdict(p) for p in points]}
    path.write_text(json.dumps(document, indent=2))


def plot(
    study: optuna.Study, points: list[ParetoPoint], baseline: dict[str, Any], path: Path
) -> None:
    """All complete trials in grey, the front as a staircase, the float32 baseline as a star."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(
        [t.values[1] / 1024 for t in done],
        [100 * t.values[0] for t in done],
        s=14,
        c="0.7",
        label="trials",
    )
    ax.step(
        [p.size_bytes / 1024 for p in points],
        [100 * p.val_accuracy for p in points],
        where="post",
        marker="o",
        color="tab:blue",
        label="Pareto front",
    )
    ax.scatter(
        [baseline["float32_bytes"] / 1024],
        [100 * baseline["val_accuracy"]],
        marker="*",
        s=160,
        color="tab:red",
        label="float32 baseline",
    )
    ax.set_xscale("log")
    ax.set_xlabel("compressed size (KiB, log scale)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(study.study_name)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_all(study: optuna.Study, out_dir: Path) -> tuple[list[ParetoPoint], dict[str, Path]]:
    """pareto.csv, pareto.json and pareto.png in ``out_dir``."""
    points = front(study)
    baseline = study.user_attrs["baseline"]
    paths = {ext: out_dir / f"pareto.{ext}" for ext in ("csv", "json", "png")}
    write_csv(points, paths["csv"])
    write_json(points, baseline, paths["json"])
    plot(study, points, baseline, paths["png"])
    return points, paths
