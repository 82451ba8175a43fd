from __future__ import annotations

from pathlib import Path

import pytest

from autocompress.config import build_config, parse_duration
from autocompress.errors import ConfigError


def test_defaults_are_the_embedded_digits_run() -> None:
    config = build_config()
    assert (config.model, config.data, config.space) == ("mlp", "digits", "default")
    assert config.resolved_study_name == "mlp-digits-default"
    assert config.out_dir == (Path.cwd() / "autocompress-runs" / "mlp-digits-default")
    assert config.storage_url == f"sqlite:///{config.out_dir / 'optuna.db'}"
    assert config.mlflow_tracking_uri.startswith("sqlite:////")  # absolute


def test_file_values_are_overridden_by_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("model: lenet300\ntrials: 7\nteacher: {epochs: 2, lr: 1e-2}\n")
    config = build_config(str(path), {"trials": 3, "seed": None})
    assert config.model == "lenet300"
    assert config.trials == 3
    assert config.teacher.epochs == 2
    assert config.teacher.lr == pytest.approx(0.01)  # YAML reads 1e-2 as a string


def test_builtin_experiment_by_name() -> None:
    config = build_config("lenet5_mnist")
    assert config.model == "lenet5"
    assert config.data.startswith("mnist:")


def test_study_name_from_mnist_path() -> None:
    config = build_config(None, {"model": "lenet5", "data": "mnist:/x/y", "space": "prune_only"})
    assert config.resolved_study_name == "lenet5-mnist-prune_only"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"modle": "mlp"}, "modle"),
        ({"trials": 0}, "trials"),
        ({"trials": "many"}, "trials"),
        ({"device": "tpu"}, "device"),
        ({"cuda_graphs": "yes"}, "cuda_graphs"),
        ({"sampler": "cmaes"}, "sampler"),
        ({"timeout": "soon"}, "timeout"),
        ({"study_name": "a b"}, "study_name"),
        ({"early_stop_drop": 2.0}, "early_stop_drop"),
        ({"max_drop": 0}, "max_drop"),
        ({"validate_every": 0}, "validate_every"),
        ({"validate_every": 1.5}, "validate_every"),
        ({"teacher": {"epochs": 0}}, "teacher.epochs"),
        ({"teacher": {"lr_max": 1}}, "teacher.lr_max"),
    ],
)
def test_bad_values_name_their_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(None, overrides)
    assert info.value.field == field
    assert "\n" not in str(info.value)


def test_bad_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: file .* does not exist"):
        build_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"^config: unknown experiment 'nope'; built-ins: "):
        build_config("nope")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(str(broken))
    listed = tmp_path / "list.yaml"
    listed.write_text("- model\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        build_config(str(listed))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90", 90.0), ("8h", 28800.0), ("1h30m", 5400.0), ("45s", 45.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_config_round_trips_through_its_dict() -> None:
    """A worker that joins a study rebuilds the config from the dict stored in it."""
    overrides = {"model": "lenet5", "timeout": "2h", "refine": {"epochs": 30}, "cuda_graphs": False}
    config = build_config(None, overrides)
    assert build_config(None, config.to_dict()) == config
