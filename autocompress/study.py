"""The search run: validate everything, then storage, sampler, baseline, trials, the front.

Everything a user can get wrong is checked in ``prepare`` before anything is written, so a bad
input leaves no study, no MLflow run and no output directory behind. ``run_search`` is the
command a user starts; ``run_worker`` is one process that runs trials of an existing study
(``--workers K`` starts K of them; ``autocompress worker`` joins from another machine).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from autocompress import pareto, report
from autocompress.artifact import SUFFIX, ModelSpec, load_model
from autocompress.blas_threads import blas_single_threaded
from autocompress.collector import setup_frozen
from autocompress.config import ExperimentConfig, build_config
from autocompress.data import DataSplits, load_data
from autocompress.errors import AutocompressError, ConfigError
from autocompress.finetune import accuracy
from autocompress.gp import StoppedAwareGPSampler
from autocompress.heap import keep_freed_memory
from autocompress.latency import measure_latency
from autocompress.models import (
    build_model,
    canonical_model_spec,
    compressible_layers,
    load_checkpoint,
)
from autocompress.objective import Objective, SearchContext, model_path
from autocompress.refine import Refiner
from autocompress.sampler_seed import FirstTrialSeeded
from autocompress.signals import Interrupted, interruptible
from autocompress.space import SearchSpace, build_space, load_space
from autocompress.storage import count_trials, open_storage
from autocompress.structured import prune_channels_
from autocompress.teacher import Baseline, cache_path, prepare_baseline
from autocompress.tpe import CachedTPESampler
from autocompress.tracking import Tracker
from autocompress.turns import study_turn

DIRECTION: dict[str, Literal["maximize", "minimize"]] = {
    "accuracy": "maximize",
    "size": "minimize",
    "latency": "minimize",
}
# Trials that count towards the budget; failed ones do not, so a resume makes up for them.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PARENT_RUN_ATTR = "mlflow_parent_run_id"


@dataclass(frozen=True)
class Prepared:
    """Validated inputs, nothing written yet."""

    config: ExperimentConfig
    device: torch.device
    data: DataSplits
    model: torch.nn.Module
    space: SearchSpace
    # (recipe file, its Optuna parameters in the search space), for a new study's first trials
    warm_start: tuple[tuple[str, dict[str, Any]], ...] = ()


@dataclass(frozen=True)
class SearchResult:
    study_name: str
    out_dir: Path
    front: list[pareto.ParetoPoint]
    baseline: dict[str, Any]
    files: dict[str, Path]
    trials_run: int  # trials this call ran (a resume runs only the rest of the budget)
    seconds: float  # wall time of this call's trials
    # Those trials' own time, start to end, summed, and the parts of it spent fine-tuning
    # (training) and in its validation passes: shares that stay in [0, 1] when workers overlap
    # (the wall time's would go negative).
    trial_seconds: float
    finetune_seconds: float
    validate_seconds: float
    interrupted: Interrupted | None = None  # the signal that stopped the search early


def resolve_device(spec: str, worker: int = 0) -> torch.device:
    """``auto`` and ``cuda`` spread workers over the GPUs: worker i gets cuda:(i mod n)."""
    if spec == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if spec in ("auto", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device", f"'{spec}' requested but CUDA is not available here")
        return torch.device("cuda", worker % torch.cuda.device_count())
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device", f"'{spec}' requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                "device", f"'{spec}': only {torch.cuda.device_count()} CUDA device(s) here"
            )
    return device


def nsga2_population(trials: int) -> int:
    """A sixth of the budget, 10 to 50 (Optuna's default): with 50 per generation, a 60-trial
    search never got past its random first generation."""
    return min(50, max(10, trials // 6))


# Finished trials TPE models in full; past them, the most recent and the front (autocompress.tpe).
TPE_WINDOW = 1000


def make_sampler(name: str, seed: int, trials: int = 300) -> optuna.samplers.BaseSampler:
    """TPE is the default: multivariate (it models how per-layer bits and ratios interact)
    and grouped (distillation settings are conditional), which Optuna 5 leaves off.
    ``trials``, the study's budget, sizes NSGA-II's generations."""
    if name == "tpe":
        return CachedTPESampler(seed=seed, multivariate=True, group=True, window=TPE_WINDOW)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=nsga2_population(trials), seed=seed)
    if name == "gp":  # shown the trials early stopping ended (autocompress.gp)
        return StoppedAwareGPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _quiet() -> None:
    for name in ("optuna", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def prepare(
    config: ExperimentConfig, space_raw: dict[str, Any] | None = None, worker: int = 0
) -> Prepared:
    """Load and check every input; ``space_raw`` is a study's stored space (for workers)."""
    device = resolve_device(config.device, worker)
    data = load_data(config.data)
    torch.manual_seed(config.seed)  # the baseline's initial weights, so a run is reproducible
    model = build_model(config.model, data.input_shape, data.num_classes)
    if config.checkpoint is not None:
        load_checkpoint(model, config.checkpoint)
    layers = list(compressible_layers(model))
    if space_raw is None:
        space = load_space(config.space, layers)
    else:
        space = build_space(space_raw, layers, Path(config.space).stem)
    _check_structured(space, model, data.train_x[:2])
    warm = tuple(
        (path, _warm_start_point(space, path, layers, i))
        for i, path in enumerate(config.warm_start)
    )
    return Prepared(config, device, data.to(device), model.to(device), space, warm)


def _warm_start_point(
    space: SearchSpace, path: str, layers: list[str], index: int
) -> dict[str, Any]:
    """A recipe's plan as parameters of the search space: checked before anything is written."""
    field = f"warm_start[{index}]"
    try:
        plan = load_space(path, layers).fixed_plan(field)
    except ConfigError as exc:
        if exc.field == field:
            raise
        raise ConfigError(field, f"'{path}': {exc}") from None
    return space.point_of(plan, field)


def _check_structured(space: SearchSpace, model: torch.nn.Module, example: torch.Tensor) -> None:
    """Every layer the space may prune by channels, at its largest ratio, on a copy: a layer
    that cannot lose channels (the output layer, ...) is an input error now, not failed trials."""
    ratios = {
        layer: unit.max_prune()
        for unit in space.units
        if "structured" in unit.dims["prune_kind"].values()
        for layer in unit.layers
    }
    ratios = {layer: ratio for layer, ratio in ratios.items() if ratio > 0}
    if ratios:
        prune_channels_(copy.deepcopy(model), ratios, example)


def _identity(config: ExperimentConfig, space: SearchSpace) -> dict[str, Any]:
    """What a study is about: resuming it with another model, data or space is refused."""
    return {
        "model": config.model,
        "data": config.data,
        "space": space.raw,
        "objectives": list(config.objectives),
    }


def _load_study(config: ExperimentConfig, worker: int, create: bool) -> optuna.Study:
    storage = open_storage(config.storage_url, config.heartbeat)
    name = config.resolved_study_name
    if not create and name not in {s.study_name for s in storage.get_all_studies()}:
        raise ConfigError("study_name", f"no study '{name}' in the storage")
    directions = [DIRECTION[name] for name in config.objectives]
    study = optuna.create_study(
        storage=storage, study_name=name, directions=directions, load_if_exists=True
    )
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(
            "study_name",
            f"study '{study.study_name}' has other objectives than {list(config.objectives)}",
        )
    # The sampler is not stored. Seed it by worker and by the number of its first trial, so
    # workers differ (even started at once) and a resume does not replay the first run's
    # random startup trials.
    study.sampler = FirstTrialSeeded(
        lambda seed: make_sampler(config.sampler, seed, config.trials),
        config.seed + 10_007 * worker,
    )
    return study


def _check_identity(study: optuna.Study, config: ExperimentConfig, space: SearchSpace) -> None:
    stored = study.user_attrs.get("identity")
    if stored is not None and stored != _identity(config, space):
        raise ConfigError(
            "study_name",
            f"study '{study.study_name}' exists with another model, data or search space; "
            "choose a new --study-name",
        )


class _Progress:
    """Trials done, best ratio within 1 point of the baseline, and an ETA (tqdm's)."""

    def __init__(self, total: int, baseline: dict[str, Any], enabled: bool) -> None:
        self.baseline = baseline
        self.best = 0.0
        self.bar = tqdm(total=total, unit="trial", desc="search", disable=not enabled)

    def update(self, trials: list[FrozenTrial]) -> None:
        """Show these newly finished trials."""
        for trial in trials:
            if trial.state == TrialState.COMPLETE and trial.values is not None:
                accuracy, size = trial.values[:2]
                if accuracy >= self.baseline["val_accuracy"] - 0.01:
                    self.best = max(self.best, self.baseline["float32_bytes"] / size)
        self.bar.set_postfix_str(f"best ratio at <=1pt drop: {self.best:.1f}x", refresh=False)
        self.bar.update(sum(t.state in FINISHED for t in trials))

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.update([trial])

    def close(self) -> None:
        self.bar.close()


def _close_orphan_runs(study: optuna.Study, tracker: Tracker, parent: str) -> None:
    """MLflow runs of trials that a dead worker left behind are closed as FAILED; such a trial
    that died before its run was written gets one."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        reason = trial.user_attrs.get("fail_reason", "worker died: heartbeat stopped")
        tags = {"state": "FAIL", "fail_reason": reason}
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is not None:
            tracker.close_if_running(run_id, "FAILED", tags)
        else:
            plan = trial.user_attrs.get("plan", {})
            start = trial.datetime_start
            start_ms = None if start is None else int(start.timestamp() * 1000)
            tracker.add_trial_run(
                parent, trial.number, trial.params, plan, tags, "FAILED", start_ms
            )


def _baseline_attrs(baseline: Baseline) -> dict[str, Any]:
    return {
        "val_accuracy": baseline.val_accuracy,
        "float32_bytes": baseline.float32_bytes,
        "source": baseline.source,
    }


def _open_tracker(config: ExperimentConfig, study: optuna.Study) -> tuple[Tracker, str]:
    """The study's experiment and parent run, created by the first of the searches started
    together on it (whatever the tracking URI: they take the study's turn)."""
    with study_turn(config.storage_url, study.study_name):
        tracker = Tracker(
            config.mlflow_tracking_uri, study.study_name, config.out_dir / "mlartifacts"
        )
        parent = tracker.open_parent(study.user_attrs.get(PARENT_RUN_ATTR), study.study_name)
        if study.user_attrs.get(PARENT_RUN_ATTR) != parent:
            study.set_user_attr(PARENT_RUN_ATTR, parent)
    return tracker, parent


def _run_trials(
    prepared: Prepared,
    study: optuna.Study,
    baseline: Baseline,
    tracker: Tracker,
    parent: str,
    progress: _Progress | None,
) -> None:
    """Trials until the study's total is reached (by any worker) or the timeout passes."""
    config = prepared.config
    models_dir = config.out_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    context = SearchContext(
        config, prepared.space, prepared.data, baseline, tracker, parent, models_dir,
        ModelSpec(canonical_model_spec(config.model), prepared.data.input_shape,
                  prepared.data.num_classes),
        values_at_stop=config.sampler == "gp",
    )  # fmt: skip
    done = count_trials(study, FINISHED)
    if done >= config.trials:
        return

    def stop_at_total(study: optuna.Study, _: FrozenTrial) -> None:
        """Optuna's ``MaxTrialsCallback``, counted by the storage (every worker's trials)."""
        if count_trials(study, FINISHED) >= config.trials:
            study.stop()

    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [stop_at_total]
    if config.refine.epochs:
        callbacks.append(
            Refiner(config.refine.every, config.refine.window, baseline.val_accuracy, config.trials)
        )
    if progress is not None:
        callbacks.append(progress)
    with setup_frozen(), blas_single_threaded():
        study.optimize(
            Objective(context),
            n_trials=config.trials - done,
            timeout=config.timeout,
            catch=(Exception,),
            callbacks=callbacks,
        )


def _measure_front(study: optuna.Study, data: DataSplits, models_dir: Path) -> None:
    """Test accuracy and latency (batch 1 and 64) for front members only, after the search,
    from their compressed files (so the numbers are what the shipped file gives). Latency is
    timed in every trial only when it is an objective: elsewhere it is the front's question."""
    tests: dict[str, float] = dict(study.user_attrs.get("test_accuracy", {}))
    latencies: dict[str, dict[str, float]] = dict(study.user_attrs.get(pareto.FRONT_LATENCY, {}))
    for trial in study.best_trials:
        path = model_path(models_dir, trial.number)
        key = str(trial.number)
        if (key in tests and key in latencies) or not path.is_file():
            continue
        model = load_model(path).to(data.test_x.device)
        tests[key] = accuracy(model, data.test_x, data.test_y)
        timed = measure_latency(model, data.input_shape, data.test_x.device)
        latencies[key] = {str(batch): lat.median_ms for batch, lat in timed.items()}
    study.set_user_attr("test_accuracy", tests)
    study.set_user_attr(pareto.FRONT_LATENCY, latencies)
    front = {t.number for t in study.best_trials}
    for path in models_dir.glob(f"trial-*{SUFFIX}"):  # only the front's files are worth keeping
        if int(path.stem.split("-")[1]) not in front:
            # searches sharing the study end together and remove the same files (a job array)
            path.unlink(missing_ok=True)


def _log_front(
    study: optuna.Study,
    tracker: Tracker,
    parent: str,
    points: list[pareto.ParetoPoint],
    files: dict[str, Path],
) -> None:
    baseline = study.user_attrs["baseline"]
    for key, path in files.items():
        tracker.log_file(parent, path, "plots" if key.startswith("plot:") else None)
    tracker.log_table(
        parent,
        {
            "trial": [p.trial for p in points],
            "val_accuracy": [p.val_accuracy for p in points],
            "test_accuracy": [p.test_accuracy for p in points],
            "size_bytes": [p.size_bytes for p in points],
            "compression_ratio": [p.ratio for p in points],
            "latency_ms": [p.latency_ms for p in points],
            "layers": [p.summary for p in points],
        },
        "pareto_table.json",
    )
    within = [p.ratio for p in points if p.val_accuracy >= baseline["val_accuracy"] - 0.01]
    tracker.log_metrics(
        parent,
        {"front_size": len(points), "best_ratio_within_1pt": max(within, default=0.0)},
        step=len(study.trials),
    )
    members = {p.trial: p for p in points}
    latencies: dict[str, dict[str, float]] = study.user_attrs.get(pareto.FRONT_LATENCY, {})
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is None:
            continue
        tracker.set_tags(run_id, {"pareto": str(trial.number in members).lower()})
        point = members.get(trial.number)
        if point is None:
            continue
        timed = latencies.get(str(point.trial), {})
        measured = {f"latency_ms_batch{batch}": ms for batch, ms in timed.items()}
        if point.test_accuracy is not None:
            measured["test_accuracy"] = point.test_accuracy
        if measured:
            tracker.log_metrics(run_id, measured)


def _write_review(study: optuna.Study, out_dir: Path) -> dict[str, Path]:
    """The morning-after views: report, interactive front, per-layer heat map, Optuna plots."""
    files = {
        "report": out_dir / "report.html",
        "html": out_dir / "pareto.html",
        "layers": out_dir / "pareto_layers.png",
    }
    files["report"].write_text(report.report_html(study))
    files["html"].write_text(report.front_html(study))
    report.layer_heatmap(study, files["layers"])
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    files |= {f"plot:{p.stem}": p for p in report.optuna_plots(study, plots)}
    return files


def _finish(
    prepared: Prepared,
    study: optuna.Study,
    baseline: Baseline,
    tracker: Tracker,
    parent: str,
    interrupted: Interrupted | None,
) -> tuple[list[pareto.ParetoPoint], dict[str, Path]]:
    """Test accuracy of the front, the front's files, MLflow's view of it; ends the parent."""
    _close_orphan_runs(study, tracker, parent)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        counts = {s: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
        reason = (
            f"no trial has completed ({counts[TrialState.PRUNED]} stopped as hopeless, "
            f"{counts[TrialState.FAIL]} failed; reasons are on the trials' MLflow runs)"
        )
        tracker.end(parent, "KILLED" if interrupted else "FAILED", {"fail_reason": reason})
        if interrupted is not None:
            raise interrupted
        raise AutocompressError(f"search: {reason}; run again with more --trials")
    out_dir = prepared.config.out_dir
    _measure_front(study, prepared.data, out_dir / "models")
    points, files = pareto.write_all(study, out_dir)
    files |= _write_review(study, out_dir)
    _log_front(study, tracker, parent, points, files)
    tracker.end(parent, "KILLED" if interrupted else "FINISHED")
    return points, files


def queue_recipes(
    study: optuna.Study, storage_url: str, recipes: Sequence[tuple[str, dict[str, Any]]]
) -> None:
    """A new study's first trials: the warm-start recipes (a resume does not repeat them).
    Searches started together on a new study take its turn, so they are queued once."""
    with study_turn(storage_url, study.study_name):
        if not study.get_trials(deepcopy=False):  # not a deep copy of a resumed study's trials
            for path, params in recipes:
                study.enqueue_trial(params, user_attrs={"warm_start": path}, skip_if_exists=True)


def _setup(
    config: ExperimentConfig, echo: Callable[[str], None], command: str | None
) -> tuple[Prepared, optuna.Study, Baseline, Tracker, str]:
    """Validate, then open (or create) the study, the baseline and the MLflow parent run."""
    prepared = prepare(config)  # every input checked before anything is written
    _quiet()
    default_storage = config.storage is None
    if not default_storage:  # a bad URL or password fails here, before anything is written
        study = _load_study(config, worker=0, create=True)
        _check_identity(study, config, prepared.space)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    if default_storage:
        study = _load_study(config, worker=0, create=True)
        _check_identity(study, config, prepared.space)

    baseline = prepare_baseline(
        config, prepared.model, prepared.data, from_checkpoint=config.checkpoint is not None
    )
    study.set_user_attr("identity", _identity(config, prepared.space))
    # Stored with absolute paths, so a worker started anywhere writes to the same places.
    study.set_user_attr("config", replace(config, out=str(config.out_dir)).to_dict())
    study.set_user_attr("baseline", _baseline_attrs(baseline))
    queue_recipes(study, config.storage_url, prepared.warm_start)

    tracker, parent = _open_tracker(config, study)
    tracker.log_dict(parent, config.to_dict(), "config.json")
    tracker.log_dict(parent, prepared.space.raw, "search_space.json")
    if baseline.source != "checkpoint":  # remote workers fetch the teacher from here
        teacher = cache_path(config, prepared.model, prepared.data)
        tracker.log_file(parent, teacher, "teacher")
    tracker.log_metrics(
        parent,
        {
            "baseline_val_accuracy": baseline.val_accuracy,
            "baseline_float32_bytes": baseline.float32_bytes,
        },
    )
    tracker.set_tags(
        parent,
        {
            "model": config.model,
            "data": config.data,
            "space": config.space,
            **({"command": command} if command else {}),  # what ran, with config.json
        },
    )
    _close_orphan_runs(study, tracker, parent)
    echo(
        f"baseline ({baseline.source}): val accuracy {baseline.val_accuracy:.2%}, "
        f"float32 {baseline.float32_bytes / 1024:.1f} KiB on {prepared.device}"
    )
    return prepared, study, baseline, tracker, parent


def run_search(
    config: ExperimentConfig,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    command: str | None = None,
) -> SearchResult:
    """``command``: the command line that started the search, recorded on the parent run."""
    keep_freed_memory()  # before the teacher trains: every step reuses its tensors' memory
    prepared, study, baseline, tracker, parent = _setup(config, echo, command)
    done = count_trials(study, FINISHED)
    bar = _Progress(max(config.trials - done, 0), study.user_attrs["baseline"], progress)
    before = {t.number for t in study.trials}
    start = time.perf_counter()
    interrupted: Interrupted | None = None
    try:
        with interruptible():
            if config.workers == 1:
                _run_trials(prepared, study, baseline, tracker, parent, bar)
            else:
                from autocompress.workers import run_local_workers

                run_local_workers(config, study, bar)
    except Interrupted as exc:
        interrupted = exc
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    ran = [t for t in study.get_trials(deepcopy=False) if t.number not in before]
    ended = [t for t in ran if t.datetime_start is not None and t.datetime_complete is not None]
    points, files = _finish(prepared, study, baseline, tracker, parent, interrupted)
    return SearchResult(
        study_name=study.study_name,
        out_dir=config.out_dir,
        front=points,
        baseline=study.user_attrs["baseline"],
        files=files,
        trials_run=len(ran),
        seconds=seconds,
        trial_seconds=sum(_duration_s(t) for t in ended),
        finetune_seconds=sum(t.user_attrs.get("time_finetune_s", 0.0) for t in ended),
        validate_seconds=sum(t.user_attrs.get("time_validate_s", 0.0) for t in ended),
        interrupted=interrupted,
    )


def _duration_s(trial: FrozenTrial) -> float:
    assert trial.datetime_start is not None and trial.datetime_complete is not None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def stored_config(
    storage: str, study_name: str, overrides: dict[str, Any]
) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config and search space a study was created with, for a worker that joins it."""
    probe = build_config(None, {"storage": storage, "study_name": study_name})
    study = _load_study(probe, worker=0, create=False)
    raw = study.user_attrs.get("config")
    identity = study.user_attrs.get("identity")
    if raw is None or identity is None:
        raise ConfigError("study_name", f"'{study_name}' is not an autocompress study")
    return build_config(None, {**raw, **overrides}), identity["space"]


def experiment_url(config: ExperimentConfig, study: optuna.Study, base: str) -> str:
    """The MLflow UI page that lists the study's runs. Sorted by name, so the UI shows the
    trial runs as rows instead of folding them under the parent run."""
    tracker = Tracker(config.mlflow_tracking_uri, study.study_name, None)
    order = "orderByKey=tags.%60mlflow.runName%60&orderByAsc=true"
    return f"{base}/#/experiments/{tracker.experiment_id}/runs?{order}"


def existing_study(
    study_name: str, out: str | None = None, storage: str | None = None
) -> tuple[optuna.Study, ExperimentConfig]:
    """An autocompress study that must already exist (read-only commands create nothing)."""
    probe = build_config(None, {"study_name": study_name, "out": out, "storage": storage})
    if storage is None and not (probe.out_dir / "optuna.db").is_file():
        raise ConfigError("study_name", f"no study storage at {probe.out_dir / 'optuna.db'}")
    _quiet()
    config, _ = stored_config(probe.storage_url, study_name, {"storage": storage})
    study = _load_study(config, worker=0, create=False)
    if "baseline" not in study.user_attrs:
        raise ConfigError("study_name", f"'{study_name}' has no finished baseline yet")
    return study, config


def run_worker(
    storage: str,
    study_name: str,
    *,
    mlflow_uri: str | None = None,
    device: str | None = None,
    worker: int = 0,
    threads: int | None = None,
) -> int:
    """Join a study and run its trials until its total is reached; returns the trials run."""
    # warm_start: the search that created the study enqueued its recipes; workers need no files
    overrides: dict[str, Any] = {"storage": storage, "study_name": study_name, "warm_start": []}
    if mlflow_uri is not None:
        overrides["mlflow_uri"] = mlflow_uri
    if device is not None:
        overrides["device"] = device
    config, space_raw = stored_config(storage, study_name, overrides)
    keep_freed_memory()
    if threads is not None:
        torch.set_num_threads(threads)
    _quiet()
    prepared = prepare(config, space_raw, worker)
    study = _load_study(config, worker, create=False)
    tracker, parent = _open_tracker(config, study)
    path = cache_path(config, prepared.model, prepared.data)
    if config.checkpoint is None and not path.is_file():  # a new machine: fetch the teacher
        tracker.download(parent, f"teacher/{path.name}", path.parent)
    baseline = prepare_baseline(
        config, prepared.model, prepared.data, from_checkpoint=config.checkpoint is not None
    )
    before = len(study.trials)
    with interruptible():
        _run_trials(prepared, study, baseline, tracker, parent, None)
    return len(study.trials) - before
