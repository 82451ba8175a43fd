"""Search space (YAML) -> Optuna suggestions -> CompressionPlan. The only caller of suggest_*.

A space is a list of layer rules plus distillation and fine-tuning settings. Each rule matches
layers by glob over their qualified names; a layer takes each field from the last rule that
sets it, so later rules override earlier ones. ``group: NAME`` ties the matched layers to one
shared setting; ``skip: true`` leaves them in float and unpruned (as do layers no rule matches).

Every value is written one of three ways: a scalar (fixed, not searched), a list (a choice), or
a mapping ``{low, high, step?, log?}`` (a range). Optuna parameters are flat and named
``bits/<unit>``, ``prune/<unit>`` or ``keep/<unit>``, ``prune_kind/<unit>``, ``act_bits/<unit>``,
``distill/<key>``, ``finetune/<key>``, where a unit is a layer's or a group's name.

``keep`` is the other way to write a layer's pruning: the fraction of weights kept (prune is
1 - keep). Its point is a log range, ``keep: {low: 0.002, high: 1.0, log: true}``: the sampler
then sees 90%, 99% and 99.9% pruned as equally far apart, where a uniform prune range spends
1% of its mass above 99%, the region the smallest models live in.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from autocompress.config import coerce, load_yaml_mapping
from autocompress.errors import ConfigError
from autocompress.plan import CompressionPlan, DistillPlan, FinetunePlan, LayerPlan
from autocompress.quantize import check_bits
from autocompress.resources import resolve_yaml

Value = bool | int | float | str


class SuggestTrial(Protocol):
    """The part of ``optuna.Trial`` (and ``FixedTrial``) a space needs."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...
    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class Dim:
    """One searchable (or fixed) value: exactly one of fixed / choices / low+high is in use."""

    kind: type
    fixed: Value | None = None
    choices: tuple[Value, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    @property
    def searched(self) -> bool:
        return self.fixed is None

    def suggest(self, trial: SuggestTrial, name: str) -> Value:
        if self.fixed is not None:
            return self.fixed
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind is int:
            step = int(self.step or 1)
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Value) -> bool:
        """Whether a trial of this dim can take ``value`` (a range's step included)."""
        if self.fixed is not None:
            return value == self.fixed
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not self.low - 1e-9 <= value <= self.high + 1e-9:
            return False
        if self.step is None:
            return True
        steps = (value - self.low) / self.step
        return abs(steps - round(steps)) < 1e-6

    def values(self) -> tuple[Value, ...]:
        """Every value a fixed or choice dim can take; a range's two ends."""
        if self.fixed is not None:
            return (self.fixed,)
        return self.choices or (self.kind(self.low), self.kind(self.high))


def parse_dim(raw: Any, kind: type, name: str, check: Callable[[Value, str], None]) -> Dim:
    """A scalar, a list or a ``{low, high, step?, log?}`` mapping, each value passed to check."""
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(name, "a choice list must not be empty")
        choices = tuple(dict.fromkeys(coerce(v, kind, name) for v in raw))
        for value in choices:
            check(value, name)
        return Dim(kind, fixed=choices[0]) if len(choices) == 1 else Dim(kind, choices=choices)
    if isinstance(raw, dict):
        if kind is bool:
            raise ConfigError(name, "must be true, false or [true, false]")
        unknown = set(raw) - {"low", "high", "step", "log"}
        if unknown or not {"low", "high"} <= set(raw):
            raise ConfigError(name, "a range is {low, high, step?, log?}")
        low, high = coerce(raw["low"], kind, name), coerce(raw["high"], kind, name)
        step = None if raw.get("step") is None else coerce(raw["step"], kind, name)
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(name, "log must be true or false")
        if not low < high:
            raise ConfigError(name, f"low ({low}) must be below high ({high})")
        if step is not None and (step <= 0 or log):
            raise ConfigError(name, "step must be positive and cannot be combined with log")
        if log and low <= 0:
            raise ConfigError(name, "a log range needs low > 0")
        check(low, name)
        check(high, name)
        return Dim(kind, low=float(low), high=float(high), step=step, log=log)
    value = coerce(raw, kind, name)
    check(value, name)
    return Dim(kind, fixed=value)


def _check_bits(value: Value, name: str) -> None:
    check_bits(int(value), name)


def _check_ratio(value: Value, name: str) -> None:
    if not 0.0 <= float(value) < 1.0:
        raise ConfigError(name, f"prune ratio must be in [0, 1), got {value}")


def _check_positive(value: Value, name: str) -> None:
    if float(value) <= 0:
        raise ConfigError(name, f"must be positive, got {value}")


def _complement(fraction: float) -> float:
    """``1 - fraction`` (prune from keep, and back), rounded to 12 decimals so that
    plan -> params -> plan gives the same plan."""
    return round(1.0 - fraction, 12)


def _check_keep(value: Value, name: str) -> None:
    if not 0.0 < float(value) <= 1.0:
        raise ConfigError(name, f"kept fraction must be in (0, 1], got {value}")


def _check_fraction(value: Value, name: str) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(name, f"must be in [0, 1], got {value}")


def _check_any(value: Value, name: str) -> None:
    pass


def _one_of(options: tuple[str, ...]) -> Callable[[Value, str], None]:
    def check(value: Value, name: str) -> None:
        if value not in options:
            raise ConfigError(name, f"must be one of {', '.join(options)}, got {value!r}")

    return check


PRUNE_KINDS = ("unstructured", "structured")
PRUNE_SCHEDULES = ("oneshot", "gradual")
_LAYER_FIELDS: dict[str, tuple[type, Callable[[Value, str], None], Value]] = {
    "bits": (int, _check_bits, 32),
    "prune": (float, _check_ratio, 0.0),
    "keep": (float, _check_keep, 1.0),  # 1 - prune; see the module docstring
    "prune_kind": (str, _one_of(PRUNE_KINDS), "unstructured"),
    "act_bits": (int, _check_bits, 32),
}
_DISTILL_FIELDS: dict[str, tuple[type, Callable[[Value, str], None], Value]] = {
    "enabled": (bool, _check_any, DistillPlan.enabled),
    "temperature": (float, _check_positive, DistillPlan.temperature),
    "alpha": (float, _check_fraction, DistillPlan.alpha),
}
_FINETUNE_FIELDS: dict[str, tuple[type, Callable[[Value, str], None], Value]] = {
    "epochs": (int, _check_positive, FinetunePlan.epochs),
    "lr": (float, _check_positive, FinetunePlan.lr),
    "batch_size": (int, _check_positive, FinetunePlan.batch_size),
    "prune_schedule": (str, _one_of(PRUNE_SCHEDULES), FinetunePlan.prune_schedule),
}
_RULE_KEYS = ("match", "group", "skip", *_LAYER_FIELDS)
_TOP_KEYS = ("description", "layers", "distill", "finetune")


@dataclass(frozen=True)
class Unit:
    """Layers that share one setting: a single layer, or a ``group`` of tied layers."""

    name: str
    layers: tuple[str, ...]
    dims: dict[str, Dim]  # bits, prune, keep, prune_kind, act_bits

    @property
    def prunes_by_keep(self) -> bool:
        """Whether the unit's pruning is written as a kept fraction (at most one of the two
        differs from its default: a rule that sets one resets the other)."""
        return self.dims["keep"] != Dim(float, fixed=1.0)

    def max_prune(self) -> float:
        """The largest prune ratio a trial can give this unit."""
        if self.prunes_by_keep:
            return _complement(min(float(v) for v in self.dims["keep"].values()))
        return max(float(v) for v in self.dims["prune"].values())


@dataclass(frozen=True)
class SearchSpace:
    name: str
    units: tuple[Unit, ...]
    float_layers: tuple[str, ...]  # skipped or matched by no rule: left as they are
    distill: dict[str, Dim]
    finetune: dict[str, Dim]
    raw: dict[str, Any]  # the YAML as read, for logging

    def suggest(self, trial: SuggestTrial) -> CompressionPlan:
        values: dict[str, Value] = {}
        for unit in self.units:
            for key, dim in unit.dims.items():
                values[f"{key}/{unit.name}"] = dim.suggest(trial, f"{key}/{unit.name}")
        values["distill/enabled"] = self.distill["enabled"].suggest(trial, "distill/enabled")
        if values["distill/enabled"]:  # temperature and alpha only matter when distilling
            for key in ("temperature", "alpha"):
                values[f"distill/{key}"] = self.distill[key].suggest(trial, f"distill/{key}")
        for key, dim in self.finetune.items():
            values[f"finetune/{key}"] = dim.suggest(trial, f"finetune/{key}")
        return self.plan_from_params(values)

    def plan_from_params(self, params: Mapping[str, Value]) -> CompressionPlan:
        """Build the plan; searched values come from params, fixed ones from the space."""

        def get(name: str, dim: Dim) -> Value:
            if dim.fixed is not None:
                return dim.fixed
            if name not in params:
                raise ConfigError("params", f"missing parameter '{name}'")
            return params[name]

        layers: dict[str, LayerPlan] = {name: LayerPlan() for name in self.float_layers}
        for unit in self.units:
            settings = {k: get(f"{k}/{unit.name}", d) for k, d in unit.dims.items()}
            prune = float(settings["prune"])
            if unit.prunes_by_keep:
                prune = _complement(float(settings["keep"]))
            for layer in unit.layers:
                layers[layer] = LayerPlan(
                    bits=int(settings["bits"]),
                    prune=prune,
                    act_bits=int(settings["act_bits"]),
                    prune_kind=str(settings["prune_kind"]),
                )
        enabled = bool(get("distill/enabled", self.distill["enabled"]))
        distill = DistillPlan(enabled=enabled)
        if enabled:
            distill = DistillPlan(
                enabled=True,
                temperature=float(get("distill/temperature", self.distill["temperature"])),
                alpha=float(get("distill/alpha", self.distill["alpha"])),
            )
        finetune = FinetunePlan(
            epochs=int(get("finetune/epochs", self.finetune["epochs"])),
            lr=float(get("finetune/lr", self.finetune["lr"])),
            batch_size=int(get("finetune/batch_size", self.finetune["batch_size"])),
            prune_schedule=str(get("finetune/prune_schedule", self.finetune["prune_schedule"])),
        )
        return CompressionPlan(layers=layers, distill=distill, finetune=finetune)

    def dims(self) -> dict[str, Dim]:
        """Every dim by its flat parameter name (searched or fixed)."""
        named = {f"{key}/{u.name}": dim for u in self.units for key, dim in u.dims.items()}
        named |= {f"distill/{key}": dim for key, dim in self.distill.items()}
        return named | {f"finetune/{key}": dim for key, dim in self.finetune.items()}

    def fixed_plan(self, field: str) -> CompressionPlan:
        """The one plan of a space that searches nothing (a hand recipe), else ConfigError."""
        searched = [name for name, dim in self.dims().items() if dim.searched]
        if searched:
            raise ConfigError(field, f"a recipe fixes every value, but it searches {searched[0]}")
        return self.plan_from_params({})

    def point_of(self, plan: CompressionPlan, field: str) -> dict[str, Value]:
        """The parameters with which this space produces exactly ``plan``, else ConfigError."""
        params = self.params_from_plan(plan)
        dims = self.dims()
        for name, value in params.items():
            if not dims[name].contains(value):
                raise ConfigError(field, f"{name} = {value} is outside the search space")
        if self.plan_from_params(params) != plan:
            raise ConfigError(
                field, "differs from the search space in a fixed value or a tied group"
            )
        return params

    def params_from_plan(self, plan: CompressionPlan) -> dict[str, Value]:
        """The flat Optuna parameters that produce ``plan`` (searched values only)."""
        params: dict[str, Value] = {}
        for unit in self.units:
            layer = plan.layers[unit.layers[0]]
            for key, dim in unit.dims.items():
                if dim.searched:
                    value = _complement(layer.prune) if key == "keep" else getattr(layer, key)
                    params[f"{key}/{unit.name}"] = value
        if self.distill["enabled"].searched:
            params["distill/enabled"] = plan.distill.enabled
        if plan.distill.enabled:
            for key in ("temperature", "alpha"):
                if self.distill[key].searched:
                    params[f"distill/{key}"] = getattr(plan.distill, key)
        for key, dim in self.finetune.items():
            if dim.searched:
                params[f"finetune/{key}"] = getattr(plan.finetune, key)
        return params


def _parse_section(
    raw: Any, fields: dict[str, tuple[type, Callable[[Value, str], None], Value]], prefix: str
) -> dict[str, Dim]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(prefix, f"must be a mapping with keys {', '.join(fields)}")
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{prefix}.{key}", f"unknown key; allowed: {', '.join(fields)}")
    return {
        key: parse_dim(raw.get(key, default), kind, f"{prefix}.{key}", check)
        for key, (kind, check, default) in fields.items()
    }


def _patterns(rule: dict[str, Any], name: str) -> list[str]:
    match = rule.get("match")
    patterns = [match] if isinstance(match, str) else match
    if (
        not isinstance(patterns, list)
        or not patterns
        or not all(isinstance(p, str) for p in patterns)
    ):
        raise ConfigError(name, "must be a glob pattern or a list of them")
    return patterns


def build_space(raw: dict[str, Any], layer_names: Sequence[str], name: str) -> SearchSpace:
    """Resolve the rules of a parsed space against the model's compressible layer names."""
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(f"space.{key}", f"unknown key; allowed: {', '.join(_TOP_KEYS)}")
    rules = raw.get("layers") or []
    if not isinstance(rules, list):
        raise ConfigError("space.layers", "must be a list of rules (match, bits, prune, ...)")

    per_layer: dict[str, dict[str, Any]] = {layer: {} for layer in layer_names}
    for i, rule in enumerate(rules):
        where = f"space.layers[{i}]"
        if not isinstance(rule, dict):
            raise ConfigError(where, "must be a mapping with 'match' and settings")
        for key in rule:
            if key not in _RULE_KEYS:
                raise ConfigError(
                    f"{where}.{key}", f"unknown key; allowed: {', '.join(_RULE_KEYS)}"
                )
        patterns = _patterns(rule, f"{where}.match")
        matched = [n for n in layer_names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not matched:
            raise ConfigError(
                f"{where}.match",
                f"{patterns} matches no layer; layers are {', '.join(layer_names)}",
            )
        if "prune" in rule and "keep" in rule:
            raise ConfigError(f"{where}.keep", "set prune or keep (= 1 - prune), not both")
        settings: dict[str, Any] = {}
        for key, (kind, check, _) in _LAYER_FIELDS.items():
            if key in rule:
                settings[key] = parse_dim(rule[key], kind, f"{where}.{key}", check)
        if "skip" in rule:
            settings["skip"] = coerce(rule["skip"], bool, f"{where}.skip")
        if "group" in rule:
            group = coerce(rule["group"], str, f"{where}.group")
            if group in layer_names:
                raise ConfigError(f"{where}.group", f"'{group}' is also a layer name")
            settings["group"] = group
        for layer in matched:
            for key, other in (("prune", "keep"), ("keep", "prune")):
                if key in settings:  # a later rule's prune replaces an earlier keep, and back
                    per_layer[layer].pop(other, None)
            per_layer[layer].update(settings)

    float_layers: list[str] = []
    unit_layers: dict[str, list[str]] = {}
    unit_dims: dict[str, dict[str, Dim]] = {}
    for layer in layer_names:
        settings = per_layer[layer]
        if settings.get("skip") or not settings:
            float_layers.append(layer)
            continue
        dims = {
            key: settings.get(key, Dim(kind, fixed=default))
            for key, (kind, _, default) in _LAYER_FIELDS.items()
        }
        unit = settings.get("group", layer)
        if unit in unit_dims and unit_dims[unit] != dims:
            raise ConfigError(
                "space.layers", f"group '{unit}' ties layers whose settings differ ({layer})"
            )
        unit_dims[unit] = dims
        unit_layers.setdefault(unit, []).append(layer)
    units = tuple(Unit(u, tuple(unit_layers[u]), unit_dims[u]) for u in unit_layers)
    return SearchSpace(
        name=name,
        units=units,
        float_layers=tuple(float_layers),
        distill=_parse_section(raw.get("distill"), _DISTILL_FIELDS, "space.distill"),
        finetune=_parse_section(raw.get("finetune"), _FINETUNE_FIELDS, "space.finetune"),
        raw=raw,
    )


def load_space(name_or_path: str, layer_names: Sequence[str]) -> SearchSpace:
    path = resolve_yaml("search_spaces", "space", name_or_path)
    return build_space(load_yaml_mapping(path, "space"), layer_names, Path(path).stem)
