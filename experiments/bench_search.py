"""Benchmark of search quality (issue 6): samplers against each other and against hand recipes,
at the same budget, in the same run, on the MNIST files in ../shared/data/mnist.

    python experiments/bench_search.py --models lenet5 --samplers tpe,random,nsga2,gp \
        --seeds 0,1,2 --trials 300 --minutes 60 --teacher-epochs 30 --out bench-lenet5
    python experiments/bench_search.py --models lenet300 ... --out bench-lenet300

(the defaults; on 2 CPU cores, early-stopped trials included, a LeNet-5 trial averaged 9.7 s
in a 12-minute search (21 s over an hour before 558ccf9 made trials about 1.3 times faster),
a LeNet-300-100 trial ~2.1 s in 4 minutes, at 10 fine-tuning epochs (docs/BENCHMARKS.md,
2026-11-27); GP's sampler adds about 0.6 s per trial; --minutes caps any search.
Spaces side by side: ``--samplers tpe,tpe@experiments/spaces/log_keep.yaml``.
Smoke test, under a minute:
``--models lenet300 --samplers tpe,random --seeds 0 --trials 4 --teacher-epochs 5``.)

For each model: the baseline is trained once (``--teacher-epochs``, seed ``--baseline-seed``,
cached by autocompress) and handed to every run as its checkpoint, so every sampler and seed
compresses the same network. Then, per seed, each sampler runs one search of ``--space``
(the default space unless given; ``--trials`` trials, no new trial after ``--minutes``) and each
hand recipe in ``experiments/recipes/`` runs as a 1-trial study whose space fixes every value;
all of them go through ``autocompress.study.run_search``, each in a fresh output directory.

Per run: the largest compression ratio (float32 bytes / compressed bytes) on the front within
0.2, 0.5 and 1 points of the baseline's validation accuracy, with those models' test accuracy; the
front's hypervolume; time per trial and the share of it outside fine-tuning; whether the front
dominates each recipe's model (same seed). Markdown tables go to stdout (median and [min-max]
over seeds), progress to stderr, everything to ``<out>/bench_search.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from autocompress.config import build_config
from autocompress.early_stop import CURVE
from autocompress.errors import AutocompressError
from autocompress.finetune import accuracy
from autocompress.study import prepare, run_search
from autocompress.teacher import cache_path, prepare_baseline

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "experiments" / "recipes"
DROPS = (0.2, 0.5, 1.0)  # validation accuracy drops in points for the ratio figures (issue 6:
# floor and goal at 0.2 and 0.5, the moonshot at 1)
HV_DROP = 5.0  # hypervolume reference: baseline accuracy minus this many points, ratio 1x
EPS = 1e-9  # accuracies are multiples of 1/1000 on 1,000 images: compare with a tolerance


@dataclass
class Baseline:
    model: str
    seed: int
    epochs: int
    source: str  # "trained" or "cache"
    train_s: float | None  # None when it came from autocompress's cache
    val_accuracy: float
    test_accuracy: float
    float32_bytes: int
    checkpoint: str  # the state_dict every run loads


@dataclass
class RunResult:
    model: str
    # "<sampler>[+warm][+refineE][+dropP][@<space>]" or "recipe:<name>"; +warm: recipes
    # enqueued first, +refineE: front members refined with E fine-tuning epochs, +dropP:
    # max_drop P points (+drop100: no trial stopped for it)
    method: str
    seed: int
    out: str
    trials: int  # finished trials (complete, pruned, failed)
    complete: int
    pruned: int
    failed: int
    front_size: int
    # early-stopped trials by the epoch after which they stopped (their curve's length)
    stopped_after: dict[str, int] = field(default_factory=dict)
    # largest ratio on the front within each drop, and that model's test accuracy
    best_ratio: dict[str, float | None] = field(default_factory=dict)
    best_test: dict[str, float | None] = field(default_factory=dict)
    hypervolume: float = 0.0
    trials_wall_s: float | None = None  # first trial's start to last trial's end
    seconds_per_trial: float | None = None
    # share of trials_wall_s not spent fine-tuning (training): the validation passes, like all
    # evaluation, count outside (the list); and their own share
    outside_finetune: float | None = None
    validation: float | None = None
    run_wall_s: float = 0.0  # the whole run_search call: setup, trials, test accuracy, files
    front: list[dict[str, Any]] = field(default_factory=list)  # val, test, bytes, ratio, summary
    dominates: dict[str, bool] = field(default_factory=dict)  # recipe -> front dominates it
    error: str | None = None  # run_search's error (e.g. no trial completed), if any


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def short_method(method: str) -> str:
    """``tpe+warm@experiments/spaces/log_keep.yaml`` -> ``tpe+warm@log_keep``: a space's path
    shown by its file's stem, in tables and directory names."""
    searcher, at, space = method.partition("@")
    return searcher + at + Path(space).stem


def recipes_for(model: str) -> dict[str, Path]:
    """The hand recipes that exist for this model: uniform8 for all, Deep Compression's own."""
    found = {"uniform8": RECIPES / "uniform8.yaml"}
    deep = RECIPES / f"deep_compression_{model}.yaml"
    if deep.is_file():
        found["deep_compression"] = deep
    return found


def train_baseline(args: argparse.Namespace, model: str, out: Path) -> Baseline:
    """Train (or fetch from autocompress's cache) one baseline and copy it into ``out``."""
    config = build_config(
        None,
        {
            "model": model,
            "data": args.data,
            "seed": args.baseline_seed,
            "teacher": {"epochs": args.teacher_epochs},
        },
    )
    prepared = prepare(config)
    start = time.perf_counter()
    baseline = prepare_baseline(config, prepared.model, prepared.data, from_checkpoint=False)
    seconds = time.perf_counter() - start
    checkpoint = out / f"baseline-{model}.pt"
    shutil.copyfile(cache_path(config, prepared.model, prepared.data), checkpoint)
    data = prepared.data
    return Baseline(
        model=model,
        seed=args.baseline_seed,
        epochs=args.teacher_epochs,
        source=baseline.source,
        train_s=seconds if baseline.source == "trained" else None,
        val_accuracy=baseline.val_accuracy,
        test_accuracy=accuracy(baseline.model, data.test_x, data.test_y),
        float32_bytes=baseline.float32_bytes,
        checkpoint=str(checkpoint),
    )


def hypervolume(points: Sequence[tuple[float, float]], base_accuracy: float) -> float:
    """Area dominated by (val accuracy, ratio) points in (accuracy points above the reference,
    log2 ratio) space; reference: ``base_accuracy`` - HV_DROP points, ratio 1x."""
    boxes = sorted(
        ((100 * (acc - base_accuracy) + HV_DROP, math.log2(ratio)) for acc, ratio in points),
        reverse=True,
    )
    area, covered = 0.0, 0.0
    for x, y in boxes:  # widest first: each adds the strip above what wider ones covered
        if x > 0 and y > covered:
            area += x * (y - covered)
            covered = y
    return area


def analyse(
    model: str, method: str, seed: int, out: Path, study_name: str, run_wall_s: float
) -> RunResult:
    """The figures of one finished study, read back from its storage."""
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{out}/optuna.db")
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        empty = RunResult(model, method, seed, str(out), len(study.trials), 0, 0, 0, 0)
        empty.best_ratio = dict.fromkeys(map(str, DROPS))
        empty.best_test = dict.fromkeys(map(str, DROPS))
        return empty
    base = study.user_attrs["baseline"]
    tests: dict[str, float] = study.user_attrs.get("test_accuracy", {})
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    stopped = Counter(
        str(len(t.user_attrs[CURVE]))
        for t in trials
        if t.state == TrialState.PRUNED and t.user_attrs.get(CURVE)
    )
    result = RunResult(
        model=model,
        method=method,
        seed=seed,
        out=str(out),
        trials=len(trials),
        complete=count[TrialState.COMPLETE],
        pruned=count[TrialState.PRUNED],
        failed=count[TrialState.FAIL],
        stopped_after=dict(sorted(stopped.items(), key=lambda item: int(item[0]))),
        front_size=len(front),
        run_wall_s=run_wall_s,
    )
    for t in front:
        result.front.append(
            {
                "trial": t.number,
                "val_accuracy": t.values[0],
                "test_accuracy": tests.get(str(t.number)),
                "size_bytes": int(t.values[1]),
                "ratio": base["float32_bytes"] / t.values[1],
                "summary": t.user_attrs.get("summary"),
            }
        )
    for drop in DROPS:
        within = [
            p for p in result.front if p["val_accuracy"] >= base["val_accuracy"] - drop / 100 - EPS
        ]
        best = max(within, key=lambda p: p["ratio"], default=None)
        result.best_ratio[str(drop)] = None if best is None else best["ratio"]
        result.best_test[str(drop)] = None if best is None else best["test_accuracy"]
    result.hypervolume = hypervolume(
        [(p["val_accuracy"], p["ratio"]) for p in result.front], base["val_accuracy"]
    )
    if trials:
        first = min(t.datetime_start for t in trials if t.datetime_start is not None)
        last = max(t.datetime_complete for t in trials if t.datetime_complete is not None)
        wall = (last - first).total_seconds()
        finetune = sum(float(t.user_attrs.get("time_finetune_s", 0.0)) for t in trials)
        validate = sum(float(t.user_attrs.get("time_validate_s", 0.0)) for t in trials)
        result.trials_wall_s = wall
        result.seconds_per_trial = wall / len(trials)
        result.outside_finetune = 1 - finetune / wall if wall > 0 else 0.0
        result.validation = validate / wall if wall > 0 else 0.0
    return result


def dominates(front: list[dict[str, Any]], point: dict[str, Any]) -> bool:
    """Some front member is at least as accurate and as small, and better in one of the two."""
    return any(
        p["val_accuracy"] >= point["val_accuracy"]
        and p["size_bytes"] <= point["size_bytes"]
        and (p["val_accuracy"] > point["val_accuracy"] or p["size_bytes"] < point["size_bytes"])
        for p in front
    )


def run_one(
    args: argparse.Namespace,
    baseline: Baseline,
    method: str,
    seed: int,
    out_root: Path,
) -> RunResult:
    """One search (a sampler) or one recipe, in a fresh directory, through run_search."""
    recipe = method.removeprefix("recipe:") if method.startswith("recipe:") else None
    searcher, _, space = method.partition("@")
    sampler, *modifiers = searcher.split("+")
    refine = [int(m.removeprefix("refine")) for m in modifiers if m.startswith("refine")]
    drop = [float(m.removeprefix("drop")) / 100 for m in modifiers if m.startswith("drop")]
    every = [int(m.removeprefix("val")) for m in modifiers if m.startswith("val")]
    name = recipe or short_method(method).replace("+", "-").replace("@", "-")
    slug = f"{baseline.model}-{name}-s{seed}"
    out = out_root / baseline.model / slug
    keys: dict[str, Any] = {
        "model": baseline.model,
        "data": args.data,
        "space": str(recipes_for(baseline.model)[recipe]) if recipe else space or args.space,
        "checkpoint": baseline.checkpoint,
        "trials": 1 if recipe else args.trials,
        "timeout": None if recipe or args.minutes is None else args.minutes * 60,
        "seed": seed,
        "sampler": "tpe" if recipe else sampler,
        "warm_start": [str(p) for p in recipes_for(baseline.model).values()]
        if "warm" in modifiers
        else [],
        "refine": {"epochs": refine[0] if refine and not recipe else 0},
        **({"max_drop": drop[0]} if drop else {}),
        **({"validate_every": every[0]} if every else {}),
        "out": str(out),
        "study_name": slug,
        "teacher": {"epochs": args.teacher_epochs},
    }
    echo: Callable[[str], None] = lambda line: log(f"  [{slug}] {line}")  # noqa: E731
    start = time.perf_counter()
    error = None
    try:
        search = run_search(build_config(None, keys), progress=False, echo=echo)
        if search.interrupted is not None:
            raise search.interrupted  # the front so far is written; stop the benchmark
    except AutocompressError as exc:  # e.g. no trial completed: recorded, the benchmark goes on
        error = str(exc)
        log(f"  [{slug}] error: {error}")
    seconds = time.perf_counter() - start
    result = analyse(baseline.model, method, seed, out, slug, seconds)
    result.error = error
    if result.seconds_per_trial is not None and result.outside_finetune is not None:
        log(
            f"  [{slug}] {result.trials} trials in {result.trials_wall_s:.0f} s "
            f"({result.seconds_per_trial:.1f} s/trial, {result.outside_finetune:.1%} outside "
            f"fine-tuning, {result.validation or 0.0:.1%} validating), front "
            f"{result.front_size}, hypervolume {result.hypervolume:.1f}, "
            f"run {seconds:.0f} s"
        )
    return result


def summarize(values: Sequence[float | None], fmt: str, unit: str = "") -> str:
    """Median [min-max] over seeds; '(k/n)' when only k of n runs have a value."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return "—"
    text = format(statistics.median(present), fmt) + unit
    if len(present) > 1:
        text += f" [{format(present[0], fmt)}-{format(present[-1], fmt)}]"
    if len(present) < len(values):
        text += f" ({len(present)}/{len(values)})"
    return text


def percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def table(baseline: Baseline, runs: list[RunResult], methods: list[str], recipes: list[str]) -> str:
    head = [
        "method",
        "runs",
        "trials",
        "stopped after epoch 1 / later",
        *(h for d in DROPS for h in (f"ratio ≤{d} pt", "its test acc")),
        "hypervolume",
        "s / trial",
        "outside FT",
        "validating",
        *(f"beats {r}" for r in recipes),
    ]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for method in methods:
        mine = [r for r in runs if r.method == method]
        if not mine:
            continue
        recipe = method.startswith("recipe:")
        cells = [
            method.removeprefix("recipe:") + " (recipe)" if recipe else short_method(method),
            str(len(mine)),
            summarize([float(r.trials) for r in mine], ".0f"),
            summarize([float(r.stopped_after.get("1", 0)) for r in mine], ".0f")
            + " / "
            + summarize(
                [float(sum(r.stopped_after.values())) - r.stopped_after.get("1", 0) for r in mine],
                ".0f",
            ),
        ]
        for drop in DROPS:
            cells.append(summarize([r.best_ratio[str(drop)] for r in mine], ".1f", "x"))
            cells.append(summarize([percent(r.best_test[str(drop)]) for r in mine], ".2f", "%"))
        cells += [
            summarize([r.hypervolume for r in mine], ".1f"),
            summarize([r.seconds_per_trial for r in mine], ".2f"),
            summarize([percent(r.outside_finetune) for r in mine], ".1f", "%"),
            summarize([percent(r.validation) for r in mine], ".1f", "%"),
        ]
        for name in recipes:
            known = [v for r in mine if (v := r.dominates.get(name)) is not None]
            cells.append("" if recipe or not known else f"{sum(known)}/{len(known)}")
        lines.append("| " + " | ".join(cells) + " |")
    points = []
    for name in recipes:
        for r in runs:
            if r.method == f"recipe:{name}" and r.front:
                p = r.front[0]
                drop = 100 * (baseline.val_accuracy - p["val_accuracy"])
                test = p["test_accuracy"]
                points.append(
                    f"- {name}, seed {r.seed}: val {100 * p['val_accuracy']:.2f}% "
                    f"({drop:.2f} pt drop), test "
                    f"{'—' if test is None else f'{100 * test:.2f}%'}, "
                    f"{p['size_bytes']:,} bytes, {p['ratio']:.1f}x ({p['summary']})"
                )
    return "\n".join(lines + (["", *points] if points else []))


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": memory,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "mlflow": metadata.version("mlflow"),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet5,lenet300", type=csv_list)
    parser.add_argument(
        "--samplers",
        default="tpe,random,nsga2,gp",
        type=csv_list,
        help="samplers (tpe,random,nsga2,gp); NAME+warm also enqueues the hand recipes first; "
        "NAME+refineE refines front members with E epochs (--refine-epochs); "
        "NAME+dropP stops trials that cannot end within P points (max_drop; +drop100: none); "
        "NAME+valK validates after epoch 1 and every K-th back from the last (validate_every); "
        "NAME@SPACE searches SPACE (a built-in name or a YAML path) instead of --space",
    )
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in csv_list(s)])
    parser.add_argument("--trials", type=int, default=300, help="trials per search (300)")
    parser.add_argument(
        "--minutes", type=float, default=60.0, help="no new trial after this, per search (60)"
    )
    parser.add_argument("--space", default="default", help="the searches' space (default)")
    parser.add_argument("--data", default=f"mnist:{(REPO.parent / 'shared/data/mnist')}")
    parser.add_argument("--teacher-epochs", type=int, default=30, help="baseline epochs (30)")
    parser.add_argument(
        "--baseline-seed", type=int, default=0, help="the one baseline's seed, for every run (0)"
    )
    parser.add_argument("--out", type=Path, default=None, help="(a new temporary directory)")
    parser.add_argument(
        "--recipes", action=argparse.BooleanOptionalAction, default=True, help="hand recipes"
    )
    return parser.parse_args(argv)


def header(report: dict[str, Any], args: argparse.Namespace) -> str:
    info = report["machine"]
    budget = f"{args.trials} trials" + (
        f" or {args.minutes:g} minutes, whichever comes first" if args.minutes else ""
    )
    return (
        f"```bash\n{report['command']}\n```\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads), "
        f"{info['memory_gib']} GiB, GPU: {info['gpu'] or 'none'}; Python {info['python']}, "
        f"torch {info['torch']}, optuna {info['optuna']}, mlflow {info['mlflow']}. "
        f"Budget per search: {budget}; seeds {', '.join(map(str, args.seeds))}; space "
        f"{args.space}; data {args.data}. Whole benchmark: {report['wall_s'] / 60:.1f} minutes.\n\n"
        "Cells: median [min-max] over seeds, (k/n) when only k of n runs have a value. "
        "stopped: trials early stopping ended after their first epoch / after a later one. "
        "ratio ≤P pt: the largest float32 / compressed size on the front with validation "
        "accuracy at most P points below the baseline's; its test acc: that model's test "
        f"accuracy. Hypervolume: {report['hypervolume_space']}, units points x log2(ratio). "
        "s / trial: first trial's start to last trial's end / finished trials; outside FT: "
        "the share of that not spent fine-tuning (training steps), validating included; "
        "validating: the share in fine-tuning's validation passes. beats R: runs whose front "
        "dominates recipe R's model of the same seed."
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    out = (args.out or Path(tempfile.mkdtemp(prefix="bench_search-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_search.json"
    log(f"output: {out}")
    started = time.perf_counter()
    report: dict[str, Any] = {
        "command": shlex.join(["python", "experiments/bench_search.py", *sys.argv[1:]]),
        "machine": machine(),
        "budget": {"trials": args.trials, "minutes": args.minutes},
        "hypervolume_space": (
            f"(val accuracy points above baseline - {HV_DROP:g} points, log2 ratio), "
            f"reference point (baseline - {HV_DROP:g} points, 1x)"
        ),
        "models": {},
        "interrupted": None,
    }
    sections: list[str] = []
    for model in args.models:
        log(f"{model}: baseline ({args.teacher_epochs} epochs, seed {args.baseline_seed})")
        baseline = train_baseline(args, model, out)
        log(
            f"  val {baseline.val_accuracy:.2%}, test {baseline.test_accuracy:.2%}, "
            f"{baseline.float32_bytes:,} bytes float32 ({baseline.source})"
        )
        recipes = list(recipes_for(model)) if args.recipes else []
        methods = [*args.samplers, *(f"recipe:{r}" for r in recipes)]
        runs: list[RunResult] = []
        report["models"][model] = {"baseline": asdict(baseline), "runs": []}
        try:
            for seed in args.seeds:  # seeds outermost: a noisy hour hits every method alike
                for method in methods:
                    log(f"{model} seed {seed}: {method}")
                    runs.append(run_one(args, baseline, method, seed, out))
                    report["models"][model]["runs"] = [asdict(r) for r in runs]
                    path.write_text(json.dumps(report, indent=2, default=str))  # so far
        except KeyboardInterrupt as exc:  # SIGINT/SIGTERM: report what finished, then stop
            report["interrupted"] = str(exc) or type(exc).__name__
            log(f"interrupted ({report['interrupted']}): reporting the finished runs")
        for run in runs:
            for recipe in recipes:
                other = [r for r in runs if r.method == f"recipe:{recipe}" and r.seed == run.seed]
                if other and other[0].front and not run.method.startswith("recipe:"):
                    run.dominates[recipe] = dominates(run.front, other[0].front[0])
        report["models"][model]["runs"] = [asdict(r) for r in runs]
        source = f"trained in {baseline.train_s:.0f} s" if baseline.train_s else "from the cache"
        sections.append(
            f"### {model}\n\n"
            f"Baseline: {baseline.epochs} epochs (seed {baseline.seed}, {source}), validation "
            f"{baseline.val_accuracy:.2%}, test {baseline.test_accuracy:.2%}, float32 "
            f"{baseline.float32_bytes:,} bytes.\n\n" + table(baseline, runs, methods, recipes)
        )
        if report["interrupted"]:
            break
    report["wall_s"] = time.perf_counter() - started
    print(header(report, args) + "\n\n" + "\n\n".join(sections))
    failed = [r for m in report["models"].values() for r in m["runs"] if r["error"]]
    for run in failed:
        print(f"\n{run['model']} {run['method']} seed {run['seed']}: {run['error']}")
    path.write_text(json.dumps(report, indent=2, default=str))
    log(f"written: {path}")
    return 130 if report["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
