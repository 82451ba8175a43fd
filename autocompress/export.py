"""Getting a trial's compressed file out of a study: export, evaluate, register.

A trial's ``.acz`` file lives in the search's ``models/`` folder (front members are kept) and,
for every complete trial, on its MLflow run, so it can be fetched from any machine.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from autocompress.artifact import load_model, unpack
from autocompress.config import ExperimentConfig
from autocompress.data import load_data
from autocompress.errors import ConfigError
from autocompress.finetune import accuracy
from autocompress.latency import Latency, measure_latency
from autocompress.models import build_model
from autocompress.objective import model_path
from autocompress.size import float32_bytes
from autocompress.tracking import Tracker


def trial_file(study: optuna.Study, config: ExperimentConfig, number: int) -> bytes:
    """The compressed file of a complete trial: from disk, else from its MLflow run."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    trial = trials.get(number)
    if trial is None:
        raise ConfigError("trial", f"study '{study.study_name}' has no trial {number}")
    if trial.state != TrialState.COMPLETE:
        raise ConfigError("trial", f"trial {number} is {trial.state.name}, not COMPLETE")
    path = model_path(config.out_dir / "models", number)
    if path.is_file():
        return path.read_bytes()
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id is not None:
        tracker = Tracker(config.mlflow_tracking_uri, study.study_name, None)
        with tempfile.TemporaryDirectory() as tmp:
            fetched = tracker.download(run_id, path.name, Path(tmp))
            if fetched is not None:
                return fetched.read_bytes()
    raise ConfigError("trial", f"trial {number}'s file is neither at {path} nor on its MLflow run")


def register(
    study: optuna.Study, config: ExperimentConfig, number: int, name: str
) -> tuple[str, str]:
    """Register a trial's file (already an artifact of its run) in the MLflow model registry;
    returns (name, version)."""
    trial_file(study, config, number)  # the trial exists, is complete and has its file
    run_id = study.trials[number].user_attrs["mlflow_run_id"]
    tracker = Tracker(config.mlflow_tracking_uri, study.study_name, None)
    artifact = model_path(Path(), number).name
    tags = {"study": study.study_name, "trial": str(number)}
    return name, tracker.register(name, run_id, artifact, tags)


@dataclass(frozen=True)
class Evaluation:
    val_accuracy: float
    test_accuracy: float
    size_bytes: int
    float32_bytes: int
    latency: dict[int, Latency]

    @property
    def ratio(self) -> float:
        return self.float32_bytes / self.size_bytes


def evaluate(data: bytes, data_spec: str, device: torch.device) -> Evaluation:
    """Accuracy, size, compression ratio and latency of a file, from the file alone."""
    spec = unpack(data).spec
    splits = load_data(data_spec)
    if splits.input_shape != spec.input_shape or splits.num_classes != spec.num_classes:
        raise ConfigError(
            "data",
            f"'{data_spec}' has inputs {splits.input_shape} and {splits.num_classes} classes; "
            f"the model takes {spec.input_shape} and {spec.num_classes}",
        )
    splits = splits.to(device)
    model = load_model(data).to(device)
    reference = build_model(spec.model, spec.input_shape, spec.num_classes)
    return Evaluation(
        val_accuracy=accuracy(model, splits.val_x, splits.val_y),
        test_accuracy=accuracy(model, splits.test_x, splits.test_y),
        size_bytes=len(data),
        float32_bytes=float32_bytes(reference),
        latency=measure_latency(model, spec.input_shape, device),
    )
