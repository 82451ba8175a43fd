"""Experiment configuration: YAML file + command-line overrides -> one frozen, validated object.

The config that runs is exactly the config that gets logged (``to_dict``), so a study can be
rebuilt from what MLflow and Optuna hold. Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autocompress.errors import ConfigError
from autocompress.resources import resolve_yaml

SAMPLERS = ("tpe", "nsga2", "random", "gp")
OBJECTIVES = (("accuracy", "size"), ("accuracy", "size", "latency"))
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class TeacherConfig:
    """How the baseline is trained when no checkpoint is given (part of its cache key)."""

    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 128
    weight_decay: float = 0.0


@dataclass(frozen=True)
class RefineConfig:
    """Front members fine-tuned again, longer, as trials of the study (``autocompress.refine``)."""

    epochs: int = 0  # fine-tuning epochs of a refined trial; 0: no refinement
    every: int = 5  # finished trials per refined trial
    window: float = 0.03  # only members at most this far below the baseline's accuracy


@dataclass(frozen=True)
class ExperimentConfig:
    model: str = "mlp"
    data: str = "digits"
    space: str = "default"
    checkpoint: str | None = None
    trials: int = 30  # total finished trials in the study (a resume runs only the rest)
    timeout: float | None = None  # seconds; no new trial starts after it
    device: str = "auto"
    # On CUDA, fine-tuning replays one captured step per batch (cuda_graph.py); off: eager
    cuda_graphs: bool = True
    seed: int = 0
    out: str | None = None  # default ./autocompress-runs/<study_name>
    storage: str | None = None  # default sqlite:///<out>/optuna.db
    study_name: str | None = None  # default <model>-<data>-<space>
    mlflow_uri: str | None = None  # default sqlite:///<out>/mlflow.db
    sampler: str = "tpe"
    # maximize accuracy, minimize size in bytes (and the batch-1 latency on the device)
    objectives: tuple[str, ...] = ("accuracy", "size")
    workers: int = 1  # local worker processes sharing the study (torch threads divided)
    # Seconds between a running trial's heartbeats; a trial silent for 3x this is failed and
    # its configuration retried (a killed worker, a dead machine).
    heartbeat: float = 10.0
    # A trial whose validation accuracy after its first fine-tuning epoch is this far below the
    # baseline (absolute, accuracy in [0, 1]) is stopped as hopeless (optuna.TrialPruned).
    early_stop_drop: float = 0.3
    # The most accuracy drop wanted on the front: a trial is stopped once it cannot finish
    # within it, judged by the largest gain complete trials made from the same epoch
    # (autocompress.early_stop). 1 keeps every trial running.
    max_drop: float = 0.05
    # Fine-tuning validates after epoch 1 and every ``validate_every``-th epoch counted back
    # from the last (1, 4, 7, 10 of 10): a pass is evaluation, outside fine-tuning in issue
    # 6's count (3% of a LeNet-300-100 trial and 5.5% of a LeNet-5 one when every epoch
    # validates); early stopping acts at those epochs. Every third: the same fronts in short
    # searches, 4 passes of 10 (docs/BENCHMARKS.md, "Fewer validation passes").
    validate_every: int = 3
    # Hand recipes (space files that fix every value) run as a new study's first trials, so
    # the sampler starts from known good points (Optuna's enqueue_trial).
    warm_start: tuple[str, ...] = ()
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)

    @property
    def resolved_study_name(self) -> str:
        if self.study_name:
            return self.study_name
        parts = (self.model, self.data.split(":", 1)[0], Path(self.space).stem)
        return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", Path(p).stem) for p in parts)

    @property
    def out_dir(self) -> Path:
        return Path(self.out or Path("autocompress-runs") / self.resolved_study_name).resolve()

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.out_dir / 'optuna.db'}"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{self.out_dir / 'mlflow.db'}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_duration(value: object, name: str = "timeout") -> float:
    """Seconds from a number or a duration such as ``8h``, ``1h30m``, ``90s``."""
    if isinstance(value, bool):
        raise ConfigError(name, "must be seconds or a duration like 8h, 30m, 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        match = _DURATION.match(text)
        if not text or match is None:
            raise ConfigError(name, f"'{value}' is not seconds or a duration like 8h, 30m, 1h30m")
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise ConfigError(name, "must be positive")
    return seconds


def load_yaml_mapping(path: Path, name: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(name, f"'{path}' is not valid YAML ({first})") from None
    except OSError as exc:
        raise ConfigError(name, f"cannot read '{path}': {exc.strerror}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(name, f"'{path}' must hold a mapping of keys to values")
    return loaded


def _check_keys(raw: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"{prefix}{key}", f"unknown key; allowed keys are {', '.join(allowed)}"
            )


def coerce(value: Any, kind: type, name: str) -> Any:
    """``value`` as ``kind`` (int, float, bool or str), or a ConfigError naming ``name``."""
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        try:  # YAML reads 1e-3 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(name, f"must be {kind.__name__}, got {value!r}")


def _typed(value: Any, kind: type, name: str, *, optional: bool = False) -> Any:
    return None if value is None and optional else coerce(value, kind, name)


def _positive(value: Any, name: str, kind: type) -> Any:
    value = _typed(value, kind, name)
    if value <= 0:
        raise ConfigError(name, f"must be positive, got {value}")
    return value


def _drop(value: Any, name: str) -> float:
    """An accuracy drop: absolute, accuracy in [0, 1]."""
    drop = _typed(value, float, name)
    if not 0 < drop <= 1:
        raise ConfigError(name, f"must be in (0, 1] (absolute accuracy), got {drop}")
    return float(drop)


def build_config(
    file: str | None = None, overrides: Mapping[str, Any] | None = None
) -> ExperimentConfig:
    """Merge an experiment file (path or built-in name) with non-None overrides and validate."""
    raw: dict[str, Any] = {}
    if file is not None:
        raw = load_yaml_mapping(resolve_yaml("experiments", "config", file), "config")
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}  # a flag sets one field of a file's section
        elif value is not None:
            raw[key] = value
    names = tuple(f.name for f in dataclasses.fields(ExperimentConfig))
    _check_keys(raw, names, "")

    teacher_raw = raw.pop("teacher", None) or {}
    if not isinstance(teacher_raw, dict):
        raise ConfigError("teacher", "must be a mapping (epochs, lr, batch_size, weight_decay)")
    teacher_names = tuple(f.name for f in dataclasses.fields(TeacherConfig))
    _check_keys(teacher_raw, teacher_names, "teacher.")
    teacher = TeacherConfig(
        epochs=_positive(teacher_raw.get("epochs", TeacherConfig.epochs), "teacher.epochs", int),
        lr=_positive(teacher_raw.get("lr", TeacherConfig.lr), "teacher.lr", float),
        batch_size=_positive(
            teacher_raw.get("batch_size", TeacherConfig.batch_size), "teacher.batch_size", int
        ),
        weight_decay=_typed(
            teacher_raw.get("weight_decay", TeacherConfig.weight_decay),
            float,
            "teacher.weight_decay",
        ),
    )

    refine = _refine_config(raw.pop("refine", None) or {})
    defaults = ExperimentConfig()
    get = lambda key: raw.get(key, getattr(defaults, key))  # noqa: E731
    sampler = _typed(get("sampler"), str, "sampler")
    if sampler not in SAMPLERS:
        raise ConfigError("sampler", f"unknown sampler '{sampler}'; allowed: {', '.join(SAMPLERS)}")
    device = _typed(get("device"), str, "device")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError("device", f"'{device}' is not one of auto, cpu, cuda, cuda:K")
    study_name = _typed(get("study_name"), str, "study_name", optional=True)
    if study_name is not None and not _STUDY_NAME.match(study_name):
        raise ConfigError("study_name", "use 1-100 letters, digits, '_', '.', '-'")
    timeout = get("timeout")
    objectives = get("objectives")
    if not isinstance(objectives, list | tuple) or tuple(objectives) not in OBJECTIVES:
        allowed = " or ".join(f"[{', '.join(o)}]" for o in OBJECTIVES)
        raise ConfigError("objectives", f"must be {allowed}, got {objectives!r}")
    warm_start = get("warm_start")
    if isinstance(warm_start, str):
        warm_start = [warm_start]
    if not isinstance(warm_start, list | tuple):
        raise ConfigError("warm_start", "must be a list of recipe files (fixed-value spaces)")
    drop, max_drop = (_drop(get(key), key) for key in ("early_stop_drop", "max_drop"))
    return ExperimentConfig(
        model=_typed(get("model"), str, "model"),
        data=_typed(get("data"), str, "data"),
        space=_typed(get("space"), str, "space"),
        checkpoint=_typed(get("checkpoint"), str, "checkpoint", optional=True),
        trials=_positive(get("trials"), "trials", int),
        timeout=None if timeout is None else parse_duration(timeout),
        device=device,
        cuda_graphs=_typed(get("cuda_graphs"), bool, "cuda_graphs"),
        seed=_typed(get("seed"), int, "seed"),
        out=_typed(get("out"), str, "out", optional=True),
        storage=_typed(get("storage"), str, "storage", optional=True),
        study_name=study_name,
        mlflow_uri=_typed(get("mlflow_uri"), str, "mlflow_uri", optional=True),
        sampler=sampler,
        objectives=tuple(objectives),
        workers=_positive(get("workers"), "workers", int),
        heartbeat=_positive(get("heartbeat"), "heartbeat", float),
        early_stop_drop=drop,
        max_drop=max_drop,
        validate_every=_positive(get("validate_every"), "validate_every", int),
        warm_start=tuple(
            _typed(item, str, f"warm_start[{i}]") for i, item in enumerate(warm_start)
        ),
        teacher=teacher,
        refine=refine,
    )


def _refine_config(raw: Any) -> RefineConfig:
    if not isinstance(raw, dict):
        raise ConfigError("refine", "must be a mapping (epochs, every, window)")
    _check_keys(raw, tuple(f.name for f in dataclasses.fields(RefineConfig)), "refine.")
    epochs = _typed(raw.get("epochs", RefineConfig.epochs), int, "refine.epochs")
    if epochs < 0:
        raise ConfigError("refine.epochs", f"must be 0 (off) or positive, got {epochs}")
    window = _drop(raw.get("window", RefineConfig.window), "refine.window")
    return RefineConfig(
        epochs=epochs,
        every=_positive(raw.get("every", RefineConfig.every), "refine.every", int),
        window=window,
    )
