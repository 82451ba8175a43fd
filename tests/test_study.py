"""The search run in-process: failing trials, hopeless trials, the Python API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from conftest import at_once
from mlflow import MlflowClient

import autocompress
from autocompress import early_stop, objective
from autocompress.config import build_config
from autocompress.gp import VALUES_AT_STOP
from autocompress.study import make_sampler, nsga2_population, queue_recipes, run_search

STUDY = "mlp-digits-default"


def config(tmp_path: Path, **overrides: Any) -> Any:
    """Digits with a short baseline training; no early stopping unless a test asks for it."""
    settings = {"out": str(tmp_path / "out"), "teacher": {"epochs": 8}, "early_stop_drop": 1.0}
    return build_config(None, {**settings, **overrides})


def test_failed_and_nan_trials_are_recorded_and_the_study_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fit = objective.fit
    calls = {"n": 0}

    def flaky_fit(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom in fine-tuning")
        history = real_fit(model, *args, **kwargs)
        if calls["n"] == 3:
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.fill_(float("nan"))
        return history

    monkeypatch.setattr(objective, "fit", flaky_fit)
    run_search(config(tmp_path, trials=4), progress=False, echo=lambda _: None)
    # Failed trials do not count towards the total: the same command makes up for them.

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / 'out/optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"]  # at most 4 trials per call
    assert study.trials[1].user_attrs["fail_reason"] == "RuntimeError: boom in fine-tuning"
    assert study.trials[2].user_attrs["fail_reason"] == (
        "TrialFailed: the compressed model's weights are not finite"
    )

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out/mlflow.db'}")
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        if trial.state.name == "FAIL":
            assert run.info.status == "FAILED"
            assert run.data.tags["fail_reason"] == trial.user_attrs["fail_reason"]
        else:
            assert run.info.status == "FINISHED"


def harsh_space(tmp_path: Path) -> str:
    """Every layer at 1 bit with 96% of weights gone: cannot stay within a 1-point drop."""
    space = tmp_path / "harsh.yaml"
    space.write_text(
        "layers: [{match: '*', bits: 1, prune: 0.96}]\nfinetune: {epochs: 3, lr: 1.0e-5}\n"
    )
    return str(space)


def test_hopeless_trials_stop_early_as_pruned(tmp_path: Path) -> None:
    cfg = config(tmp_path, trials=1, space=harsh_space(tmp_path), early_stop_drop=0.01)
    stopped = r"no trial has completed \(1 stopped as hopeless, 0 failed"
    with pytest.raises(autocompress.AutocompressError, match=stopped):
        run_search(cfg, progress=False, echo=lambda _: None)
    study = optuna.load_study(study_name="mlp-digits-harsh", storage=cfg.storage_url)
    trial = study.trials[0]
    assert trial.state.name == "PRUNED"
    assert "after epoch 1" in trial.user_attrs["pruned_reason"]
    [accuracy] = trial.user_attrs[early_stop.CURVE]  # the one epoch it ran, validated
    assert f"{accuracy:.2%} after epoch 1" in trial.user_attrs["pruned_reason"]
    # its epoch counts as fine-tuning time, its validation pass apart as evaluation
    assert trial.user_attrs["time_finetune_s"] > trial.user_attrs["time_validate_s"] > 0
    client = MlflowClient(tracking_uri=cfg.mlflow_tracking_uri)
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1]


@pytest.mark.parametrize("sampler", ["gp", "tpe"])
def test_a_stopped_trial_records_its_values_at_the_stop_for_gp(
    tmp_path: Path, sampler: str
) -> None:
    """GP models them (autocompress.gp); the other samplers skip the packing."""
    cfg = config(
        tmp_path, trials=1, space=harsh_space(tmp_path), early_stop_drop=0.01, sampler=sampler
    )
    with pytest.raises(autocompress.AutocompressError, match="no trial has completed"):
        run_search(cfg, progress=False, echo=lambda _: None)
    study = optuna.load_study(study_name="mlp-digits-harsh", storage=cfg.storage_url)
    [trial] = study.trials
    assert trial.state.name == "PRUNED"
    if sampler == "tpe":
        assert VALUES_AT_STOP not in trial.user_attrs
        return
    accuracy, size = trial.user_attrs[VALUES_AT_STOP]  # the study's objective order
    assert accuracy == trial.user_attrs[early_stop.CURVE][-1]
    # 1-bit weights, 96% pruned: the file of a plan far smaller than the float32 model
    assert 0 < size < study.user_attrs["baseline"]["float32_bytes"] / 10


def test_a_trial_that_cannot_end_within_max_drop_stops_at_the_learned_gain(
    tmp_path: Path,
) -> None:
    harsh = harsh_space(tmp_path)
    run_search(config(tmp_path, trials=1, space=harsh), progress=False, echo=lambda _: None)
    study = optuna.load_study(study_name="mlp-digits-harsh", storage=config(tmp_path).storage_url)
    [first] = study.trials
    curve = first.user_attrs[early_stop.CURVE]
    assert len(curve) == 3 and curve[-1] == first.values[0]
    # History: the real trial, and dominated copies of it, enough for the allowance.
    for _ in range(early_stop.MIN_HISTORY - 1):
        study.add_trial(
            optuna.trial.create_trial(
                values=[first.values[0] - 0.1, first.values[1] * 2],
                user_attrs={early_stop.CURVE: curve, "plan": first.user_attrs["plan"]},
            )
        )
    # The same plan again can end near the first, far more than 1 point below the baseline.
    cfg = config(tmp_path, trials=early_stop.MIN_HISTORY + 1, space=harsh, max_drop=0.01)
    run_search(cfg, progress=False, echo=lambda _: None)
    last = optuna.load_study(study_name="mlp-digits-harsh", storage=cfg.storage_url).trials[-1]
    assert last.state.name == "PRUNED"
    assert (
        "after epoch 1 cannot end within 1.0% of the baseline" in last.user_attrs["pruned_reason"]
    )
    assert len(last.user_attrs[early_stop.CURVE]) == 1
    client = MlflowClient(tracking_uri=cfg.mlflow_tracking_uri)
    run = client.get_run(last.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"


def test_validate_every_k_epochs_leaves_gaps_in_the_curve(tmp_path: Path) -> None:
    """The default space's 10 epochs validated after 1, 4, 7 and 10: the curve holds null
    for the others, MLflow's val_accuracy has those steps and train_loss all ten."""
    cfg = config(tmp_path, trials=1, validate_every=3)
    run_search(cfg, progress=False, echo=lambda _: None)
    [trial] = optuna.load_study(study_name=STUDY, storage=cfg.storage_url).trials
    curve = trial.user_attrs[early_stop.CURVE]
    assert [k + 1 for k, value in enumerate(curve) if value is not None] == [1, 4, 7, 10]
    assert curve[-1] == trial.values[0]
    client = MlflowClient(tracking_uri=cfg.mlflow_tracking_uri)
    run_id = trial.user_attrs["mlflow_run_id"]
    steps = {
        key: [m.step for m in client.get_metric_history(run_id, key)]
        for key in ("val_accuracy", "train_loss")
    }
    assert steps == {"val_accuracy": [1, 4, 7, 10], "train_loss": list(range(1, 11))}


def test_python_api_returns_the_front(tmp_path: Path) -> None:
    front = autocompress.search(out=str(tmp_path / "api"), trials=2, teacher={"epochs": 8})
    assert front
    assert all(isinstance(p, autocompress.ParetoPoint) for p in front)
    assert all(p.test_accuracy is not None and p.ratio > 1 for p in front)
    sizes = [p.size_bytes for p in front]
    assert sizes == sorted(sizes)


def test_latency_is_timed_on_the_front_files_unless_it_is_an_objective(tmp_path: Path) -> None:
    cfg = config(tmp_path, trials=3)
    result = run_search(cfg, progress=False, echo=lambda _: None)
    study = optuna.load_study(study_name=STUDY, storage=cfg.storage_url)
    front = {p.trial for p in result.front}
    assert all("latency_ms" not in t.user_attrs for t in study.trials)  # no trial timed itself
    assert set(study.user_attrs["front_latency_ms"]) == {str(n) for n in front}
    assert all(p.latency_ms is not None and p.latency_ms > 0 for p in result.front)
    client = MlflowClient(tracking_uri=cfg.mlflow_tracking_uri)
    for trial in study.trials:
        metrics = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
        timed = {"latency_ms_batch1", "latency_ms_batch64"} <= set(metrics)
        assert timed == (trial.number in front), trial.number
        # training and validation passes timed apart, both inside the trial's own time
        train_s, validate_s = metrics["time_finetune_s"], metrics["time_validate_s"]
        assert (train_s, validate_s) == (
            trial.user_attrs["time_finetune_s"],
            trial.user_attrs["time_validate_s"],
        )
        assert 0 < validate_s < train_s
        assert train_s + validate_s < metrics["time_trial_s"]
    assert 0 < result.validate_seconds < result.finetune_seconds < result.trial_seconds


def test_resuming_with_another_space_is_refused(tmp_path: Path) -> None:
    run_search(config(tmp_path, trials=1), progress=False, echo=lambda _: None)
    other = config(tmp_path, trials=2, space="prune_only", study_name=STUDY)
    with pytest.raises(
        autocompress.ConfigError, match=r"^study_name: study 'mlp-digits-default' exists"
    ):
        run_search(other, progress=False, echo=lambda _: None)


RESNET = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.grouped = nn.Conv2d(channels, channels, 3, padding=1, groups=2, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.grouped(x)))
        return torch.relu(x + self.bn2(self.depthwise(y)))


def make(input_shape, num_classes):
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 8, 3, padding=1), nn.ReLU(), Block(8),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes),
    )
"""


def test_residual_batchnorm_grouped_depthwise_model_with_activation_bits(tmp_path: Path) -> None:
    (tmp_path / "resnet.py").write_text(RESNET)
    space = tmp_path / "acts.yaml"
    space.write_text(
        "layers:\n"
        "  - {match: '*', bits: [4, 8], prune: {low: 0.0, high: 0.5, step: 0.1}, act_bits: 8}\n"
        "finetune: {epochs: 2, lr: 1.0e-3, batch_size: 128}\n"
    )
    cfg = config(
        tmp_path, model=f"{tmp_path / 'resnet.py'}:make", space=str(space), trials=2, seed=3
    )
    result = run_search(cfg, progress=False, echo=lambda _: None)
    assert result.front
    plan = result.front[0].plan
    assert set(plan["layers"]) == {"0", "2.grouped", "2.depthwise", "5"}
    assert all(layer["act_bits"] == 8 for layer in plan["layers"].values())


def test_a_checkpoint_is_the_baseline(tmp_path: Path) -> None:
    from autocompress.data import load_data
    from autocompress.models import build_model

    data = load_data("digits")
    model = build_model("mlp", data.input_shape, data.num_classes)
    torch.save(model.state_dict(), tmp_path / "mlp.pt")  # untrained: chance-level accuracy
    messages: list[str] = []
    cfg = config(tmp_path, checkpoint=str(tmp_path / "mlp.pt"), trials=1)
    run_search(cfg, progress=False, echo=messages.append)
    assert messages[0].startswith("baseline (checkpoint): val accuracy")
    study = optuna.load_study(study_name=STUDY, storage=cfg.storage_url)
    assert study.user_attrs["baseline"]["source"] == "checkpoint"
    assert study.user_attrs["baseline"]["val_accuracy"] < 0.3


def test_structured_pruning_and_latency_as_a_third_objective(tmp_path: Path) -> None:
    space = tmp_path / "channels.yaml"
    space.write_text(
        "layers:\n"
        "  - {match: 'fc[12]', bits: [8], prune: [0.5, 0.75], prune_kind: structured}\n"
        "  - {match: fc3, bits: 8}\n"
        "finetune: {epochs: 1, lr: 1.0e-3, batch_size: 128}\n"
    )
    cfg = config(tmp_path, space=str(space), trials=2, objectives=["accuracy", "size", "latency"])
    result = run_search(cfg, progress=False, echo=lambda _: None)
    study = optuna.load_study(study_name="mlp-digits-channels", storage=cfg.storage_url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    for trial in study.trials:
        assert len(trial.values) == 3 and trial.values[2] > 0
        kept = 1 - trial.params["prune/fc1"]
        client = MlflowClient(tracking_uri=cfg.mlflow_tracking_uri)
        metrics = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
        # fc1 64->256 and fc2 256->128 lose channels; fc3's inputs shrink with fc2
        fc1, fc2 = round(256 * kept), round(128 * (1 - trial.params["prune/fc2"]))
        assert metrics["parameters"] == 64 * fc1 + fc1 + fc1 * fc2 + fc2 + fc2 * 10 + 10
        assert {"latency_ms_batch1", "latency_ms_batch64"} <= set(metrics)
    assert all(p.test_accuracy is not None for p in result.front)


def test_structured_pruning_of_the_output_layer_is_refused_up_front(tmp_path: Path) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text("layers: [{match: '*', bits: 8, prune: 0.5, prune_kind: structured}]\n")
    with pytest.raises(autocompress.ConfigError, match=r"^prune/fc3: .*output layer"):
        run_search(config(tmp_path, space=str(space), trials=1), progress=False)
    assert not (tmp_path / "out").exists()


RECIPE = """layers:
  - {match: fc1, bits: 4, prune: 0.5}
  - {match: fc2, bits: 3, prune: 0.7}
  - {match: fc3, bits: 8, prune: 0.2}
distill: {enabled: true, temperature: 4.0, alpha: 0.5}
finetune: {epochs: 2, lr: 1.0e-3, batch_size: 128}
"""
SHORT_SPACE = """layers: [{match: '*', bits: [2, 3, 4, 8], prune: {low: 0.0, high: 0.9, step: 0.1}}]
distill: {enabled: true, temperature: {low: 1.0, high: 8.0}, alpha: {low: 0.1, high: 0.95}}
finetune: {epochs: 2, lr: {low: 1.0e-4, high: 1.0e-2, log: true}, batch_size: 128}
"""


def test_warm_start_recipes_run_first_and_once(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "space.yaml").write_text(SHORT_SPACE)
    keys = {"space": str(tmp_path / "space.yaml"), "warm_start": [str(tmp_path / "recipe.yaml")]}
    run_search(config(tmp_path, trials=2, **keys), progress=False, echo=lambda _: None)
    study = optuna.load_study(study_name="mlp-digits-space", storage=config(tmp_path).storage_url)
    first = study.trials[0]
    assert first.user_attrs["warm_start"] == str(tmp_path / "recipe.yaml")
    assert first.user_attrs["summary"] == "fc1 4b/50% fc2 3b/70% fc3 8b/20%"
    assert first.params["distill/temperature"] == 4.0
    assert "warm_start" not in study.trials[1].user_attrs  # the sampler's own

    run_search(config(tmp_path, trials=3, **keys), progress=False, echo=lambda _: None)
    study = optuna.load_study(study_name="mlp-digits-space", storage=config(tmp_path).storage_url)
    assert [("warm_start" in t.user_attrs) for t in study.trials] == [True, False, False]


def test_searches_started_together_queue_the_recipes_once(tmp_path: Path) -> None:
    """Each of 4 threads finds the new study empty at the same moment; without turns each
    queued the recipes."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    recipes = [("a.yaml", {"bits/fc1": 4}), ("b.yaml", {"bits/fc1": 8})]
    studies = [optuna.load_study(study_name="s", storage=url) for _ in range(4)]  # loaded first

    def search() -> None:
        queue_recipes(studies.pop(), url, recipes)

    assert at_once(search, workers=4) == []
    queued = optuna.load_study(study_name="s", storage=url).trials
    assert [t.user_attrs["warm_start"] for t in queued] == ["a.yaml", "b.yaml"]


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (RECIPE.replace("bits: 3", "bits: 5"), r"bits/fc2 = 5 is outside the search space"),
        (RECIPE.replace("bits: 3", "bits: [3, 4]"), r"it searches bits/fc2"),
        (RECIPE.replace("epochs: 2", "epochs: 5"), r"differs from the search space in a fixed"),
        (
            RECIPE.replace("match: fc3", "match: fc9"),
            r"recipe.yaml': space.layers\[2\].match: \['fc9'\] matches no layer",
        ),
    ],
)
def test_a_bad_warm_start_is_one_line_and_writes_nothing(
    tmp_path: Path, recipe: str, message: str
) -> None:
    (tmp_path / "recipe.yaml").write_text(recipe)
    (tmp_path / "space.yaml").write_text(SHORT_SPACE)
    keys = {"space": str(tmp_path / "space.yaml"), "warm_start": [str(tmp_path / "recipe.yaml")]}
    with pytest.raises(autocompress.errors.ConfigError, match=message) as info:
        run_search(config(tmp_path, trials=1, **keys), progress=False, echo=lambda _: None)
    assert str(info.value).startswith("warm_start[0]: ")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("trials", "population"), [(20, 10), (60, 10), (120, 20), (300, 50), (900, 50)]
)
def test_nsga2_generations_fit_the_budget(trials: int, population: int) -> None:
    """Optuna's 50 per generation left a 60-trial search all first generation (random)."""
    assert nsga2_population(trials) == population
    sampler = make_sampler("nsga2", 0, trials)
    assert isinstance(sampler, optuna.samplers.NSGAIISampler)
    assert sampler._population_size == population  # no public accessor in Optuna 5


def test_gp_optimizes_its_acquisition_in_batches() -> None:
    """greenlet is installed with autocompress: without it Optuna's GP warns and runs its
    acquisition optimizer's starting points one after another (1.4-1.7x slower draws)."""
    from optuna._gp import batched_lbfgsb

    assert batched_lbfgsb._greenlet_imports.is_successful()
