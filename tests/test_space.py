from __future__ import annotations

from typing import Any

import optuna
import pytest

from autocompress.errors import ConfigError
from autocompress.plan import CompressionPlan, LayerPlan
from autocompress.resources import builtin_names
from autocompress.space import build_space, load_space, parse_dim

LAYERS = ["conv1", "conv2", "fc1", "fc2"]


def space(raw: dict[str, Any]) -> Any:
    return build_space(raw, LAYERS, "test")


def test_builtin_spaces_load_for_lenet5() -> None:
    assert {"default", "quantize_only", "prune_only"} <= set(builtin_names("search_spaces"))
    for name in ("default", "quantize_only", "prune_only"):
        loaded = load_space(name, LAYERS)
        assert [u.name for u in loaded.units] == LAYERS


def test_plan_params_round_trip_through_fixed_trial() -> None:
    s = load_space("default", LAYERS)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(5):
        trial = study.ask()
        plan = s.suggest(trial)
        # a plan keeps prune = 1 - keep to 12 decimals, so keep comes back to 12 decimals
        assert s.params_from_plan(plan) == pytest.approx(trial.params, abs=1e-12)
        again = s.suggest(optuna.trial.FixedTrial(trial.params))
        assert again == plan
        assert s.suggest(optuna.trial.FixedTrial(s.params_from_plan(plan))) == plan
        assert CompressionPlan.from_dict(plan.to_dict()) == plan
        study.tell(trial, [0.5, 1.0])


def test_later_rules_override_earlier_ones_field_by_field() -> None:
    s = space(
        {
            "layers": [
                {"match": "*", "bits": [2, 4, 8], "prune": {"low": 0.0, "high": 0.9, "step": 0.1}},
                {"match": "fc2", "bits": 8},
            ]
        }
    )
    params = {
        "bits/conv1": 2, "bits/conv2": 4, "bits/fc1": 2,
        "prune/conv1": 0.1, "prune/conv2": 0.2, "prune/fc1": 0.3, "prune/fc2": 0.4,
    }  # fmt: skip
    plan = s.suggest(optuna.trial.FixedTrial(params))
    assert plan.layers["fc2"] == LayerPlan(bits=8, prune=0.4)  # bits fixed, prune inherited
    assert plan.layers["conv1"] == LayerPlan(bits=2, prune=0.1)


def test_groups_tie_layers_and_skip_leaves_them_in_float() -> None:
    s = space(
        {
            "layers": [
                {"match": "conv*", "bits": [4, 8], "group": "convs"},
                {"match": "fc*", "bits": [2, 3], "prune": [0.5, 0.9]},
                {"match": "fc2", "skip": True},
            ]
        }
    )
    assert [u.name for u in s.units] == ["convs", "fc1"]
    assert s.float_layers == ("fc2",)
    plan = s.suggest(optuna.trial.FixedTrial({"bits/convs": 4, "bits/fc1": 3, "prune/fc1": 0.9}))
    assert plan.layers["conv1"].bits == plan.layers["conv2"].bits == 4
    assert plan.layers["fc2"] == LayerPlan()  # float, unpruned


def test_fixed_values_are_not_optuna_parameters() -> None:
    s = load_space("quantize_only", LAYERS)
    trial = optuna.create_study(directions=["maximize", "minimize"]).ask()
    plan = s.suggest(trial)
    assert not any(name.startswith("prune/") for name in trial.params)
    assert all(layer.prune == 0.0 for layer in plan.layers.values())
    assert trial.params["finetune/lr"] == plan.finetune.lr
    assert "finetune/epochs" not in trial.params


def test_distillation_settings_only_when_enabled() -> None:
    s = space({"layers": [{"match": "*", "bits": [4, 8]}], "distill": {"enabled": [True, False]}})
    base = {f"bits/{n}": 4 for n in LAYERS}
    off = s.suggest(optuna.trial.FixedTrial({**base, "distill/enabled": False}))
    assert not off.distill.enabled
    assert s.params_from_plan(off) == {**base, "distill/enabled": False}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"layers": [{"match": "conv9"}]},
            r"^space.layers\[0\].match: \['conv9'\] matches no layer; "
            r"layers are conv1, conv2, fc1, fc2$",
        ),
        ({"layers": [{"match": "*", "bits": [4, 33]}]}, r"^space.layers\[0\].bits: bits must be"),
        ({"layers": [{"match": "*", "bits": 0}]}, r"^space.layers\[0\].bits: bits must be"),
        (
            {"layers": [{"match": "*", "prune": 1.0}]},
            r"^space.layers\[0\].prune: prune ratio must be in \[0, 1\)",
        ),
        (
            {"layers": [{"match": "*", "prune": {"low": 0.0, "high": 1.0}}]},
            r"prune ratio must be in \[0, 1\)",
        ),
        (
            {"layers": [{"match": "*", "prune": {"low": -0.1, "high": 0.5}}]},
            r"prune ratio must be in \[0, 1\)",
        ),
        (
            {"layers": [{"match": "*", "keep": 0.0}]},
            r"^space.layers\[0\].keep: kept fraction must be in \(0, 1\], got 0.0$",
        ),
        (
            {"layers": [{"match": "*", "keep": {"low": 0.0, "high": 1.0, "log": True}}]},
            r"^space.layers\[0\].keep: a log range needs low > 0$",
        ),
        (
            {"layers": [{"match": "*", "prune": 0.5, "keep": 0.5}]},
            r"^space.layers\[0\].keep: set prune or keep \(= 1 - prune\), not both$",
        ),
        ({"layers": [{"match": "*", "bitz": 4}]}, r"^space.layers\[0\].bitz: unknown key"),
        ({"layers": [{"bits": 4}]}, r"^space.layers\[0\].match: must be a glob"),
        ({"layers": "all"}, r"^space.layers: must be a list"),
        ({"layerz": []}, r"^space.layerz: unknown key"),
        ({"distill": {"temperature": 0}}, r"^space.distill.temperature: must be positive"),
        ({"distill": {"alpha": [0.5, 2]}}, r"^space.distill.alpha: must be in \[0, 1\]"),
        (
            {"finetune": {"lr": {"low": 0.1, "high": 0.01}}},
            r"^space.finetune.lr: low \(0.1\) must be below high",
        ),
        ({"finetune": {"epochs": "three"}}, r"^space.finetune.epochs: must be int"),
        (
            {"finetune": {"prune_schedule": ["oneshot", "slow"]}},
            r"^space.finetune.prune_schedule: must be one of oneshot, gradual, got 'slow'",
        ),
        (
            {
                "layers": [
                    {"match": "conv*", "bits": [4, 8], "group": "g"},
                    {"match": "conv2", "bits": 2},
                ]
            },
            r"group 'g' ties layers whose settings differ",
        ),
    ],
)
def test_bad_spaces_name_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        space(raw)
    assert "\n" not in str(info.value)


def test_space_files_by_path_and_unknown_names(tmp_path: Any) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("layers:\n  - match: 'fc*'\n    bits: [4, 8]\n")
    s = load_space(str(path), LAYERS)
    assert s.name == "mine"
    assert s.float_layers == ("conv1", "conv2")
    with pytest.raises(
        ConfigError, match=r"^space: unknown search space 'nope'; built-ins: default"
    ):
        load_space("nope", LAYERS)


def test_prune_schedule_is_a_searchable_finetune_choice() -> None:
    s = space(
        {
            "layers": [{"match": "*", "prune": 0.5}],
            "finetune": {"prune_schedule": ["oneshot", "gradual"]},
        }
    )
    for schedule in ("oneshot", "gradual"):
        plan = s.suggest(optuna.trial.FixedTrial({"finetune/prune_schedule": schedule}))
        assert plan.finetune.prune_schedule == schedule
        assert s.params_from_plan(plan) == {"finetune/prune_schedule": schedule}
    fixed = space({"layers": [{"match": "*", "prune": 0.5}]})
    assert fixed.suggest(optuna.trial.FixedTrial({})).finetune.prune_schedule == "oneshot"


@pytest.mark.parametrize(
    ("raw", "inside", "outside"),
    [
        ({"low": 0.0, "high": 0.9, "step": 0.1}, [0.0, 0.3, 0.7, 0.9], [0.35, 0.95, -0.1, "x"]),
        ({"low": 1e-4, "high": 1e-2, "log": True}, [1e-4, 3e-3, 1e-2], [1e-5, 0.1]),
        ([2, 4, 8], [2, 8], [3, 16]),
        (0.5, [0.5], [0.4]),
    ],
)
def test_dim_contains_exactly_what_a_trial_can_take(
    raw: Any, inside: list[Any], outside: list[Any]
) -> None:
    kind = int if isinstance(raw, list) else float
    dim = parse_dim(raw, kind, "d", lambda value, name: None)
    assert all(dim.contains(v) for v in inside)
    assert not any(dim.contains(v) for v in outside)


def test_keep_searches_the_kept_fraction_on_a_log_scale() -> None:
    s = space(
        {"layers": [{"match": "*", "bits": 4, "keep": {"low": 0.001, "high": 1.0, "log": True}}]}
    )
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0)
    )
    pruned = []
    for _ in range(200):
        trial = study.ask()
        plan = s.suggest(trial)
        assert trial.distributions["keep/fc1"] == optuna.distributions.FloatDistribution(
            0.001, 1.0, log=True
        )
        assert plan.layers["fc1"].prune == pytest.approx(1 - trial.params["keep/fc1"], abs=1e-12)
        assert s.params_from_plan(plan) == pytest.approx(trial.params, abs=1e-12)
        assert s.suggest(optuna.trial.FixedTrial(s.params_from_plan(plan))) == plan
        pruned.append(plan.layers["fc1"].prune)
        study.tell(trial, [0.5, 1.0])
    # log-uniform over three decades: about a third of the draws prune more than 99%, where a
    # uniform prune range over [0, 0.999] would put about 1% of them
    share = sum(p > 0.99 for p in pruned) / len(pruned)
    assert 0.2 < share < 0.45
    assert max(pruned) > 0.995


def test_a_later_rule_switches_between_prune_and_keep() -> None:
    s = space(
        {
            "layers": [
                {"match": "*", "bits": 4, "keep": [0.01, 0.1]},
                {"match": "conv*", "prune": 0.25},
                {"match": "conv2", "keep": 0.5},
            ]
        }
    )
    plan = s.suggest(optuna.trial.FixedTrial({"keep/fc1": 0.01, "keep/fc2": 0.1}))
    assert [plan.layers[n].prune for n in LAYERS] == [0.25, 0.5, 0.99, 0.9]
    assert s.point_of(plan, "warm_start[0]") == {"keep/fc1": 0.01, "keep/fc2": 0.1}
    assert [u.max_prune() for u in s.units] == [0.25, 0.5, 0.99, 0.99]


def test_a_recipe_outside_the_keep_range_is_refused() -> None:
    s = space(
        {"layers": [{"match": "*", "bits": 4, "keep": {"low": 0.05, "high": 1.0, "log": True}}]}
    )
    recipe = CompressionPlan(layers={n: LayerPlan(bits=4, prune=0.99) for n in LAYERS})
    with pytest.raises(
        ConfigError, match=r"^warm_start\[0\]: keep/conv1 = 0.01 is outside the search space$"
    ):
        s.point_of(recipe, "warm_start[0]")
