"""CompressionPlan: everything one trial does to the model, as plain values.

A plan is what gets logged (``to_dict``) and is enough to rebuild the compressed model from the
teacher: every step downstream of it is a function of (plan, model, data, config).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from autocompress.errors import ConfigError

FLOAT_BITS = 32


@dataclass(frozen=True)
class LayerPlan:
    bits: int = FLOAT_BITS  # 1..15 integer levels, 16 fp16, 32 left in float
    prune: float = 0.0  # fraction of weights (or, structured, output channels) removed
    act_bits: int = FLOAT_BITS  # bit width of the layer's input; 32 = not quantized
    # "unstructured": magnitude masks (smaller file); "structured": whole output channels
    # removed (smaller and faster dense layers)
    prune_kind: str = "unstructured"


@dataclass(frozen=True)
class DistillPlan:
    enabled: bool = True
    temperature: float = 4.0
    alpha: float = 0.5  # weight of the distillation term; 1 - alpha goes to cross-entropy


@dataclass(frozen=True)
class FinetunePlan:
    epochs: int = 10  # as the built-in spaces: 3 lost ~3 points at high compression
    lr: float = 1e-3
    batch_size: int = 128
    # "oneshot": masks at their planned ratio before fine-tuning; "gradual": masks grow from
    # none to the planned ratio over the first RAMP_FRACTION of fine-tuning (prune.GradualPruning)
    prune_schedule: str = "oneshot"


def pruned_percent(ratio: float) -> str:
    """``92%``; above 99% with as many decimals as tell it from 100% (``99.7%``, ``99.96%``):
    the smallest models differ there, where a tenth of a point is a large share of the kept."""
    if ratio <= 0.99 or ratio >= 1.0:
        return f"{ratio:.0%}"
    for digits in (1, 2, 3):
        text = f"{ratio:.{digits}%}"
        if float(text[:-1]) < 100:
            return text
    return f"{ratio:.4%}"


@dataclass(frozen=True)
class CompressionPlan:
    layers: dict[str, LayerPlan]
    distill: DistillPlan = field(default_factory=DistillPlan)
    finetune: FinetunePlan = field(default_factory=FinetunePlan)

    @property
    def bits(self) -> dict[str, int]:
        return {name: layer.bits for name, layer in self.layers.items()}

    @property
    def structured_ratios(self) -> dict[str, float]:
        return self._ratios("structured")

    @property
    def unstructured_ratios(self) -> dict[str, float]:
        return self._ratios("unstructured")

    def _ratios(self, kind: str) -> dict[str, float]:
        return {
            name: layer.prune
            for name, layer in self.layers.items()
            if layer.prune_kind == kind and layer.prune > 0
        }

    @property
    def act_bits(self) -> dict[str, int]:
        return {name: layer.act_bits for name, layer in self.layers.items()}

    def summary(self) -> str:
        """One line per plan, e.g. ``conv1 8b/c50% fc1 3b/92%`` (bits / pruned; c = channels)."""
        parts = []
        for name, layer in self.layers.items():
            bits = "fp32" if layer.bits == FLOAT_BITS else f"{layer.bits}b"
            kind = "c" if layer.prune_kind == "structured" else ""
            act = "" if layer.act_bits == FLOAT_BITS else f" a{layer.act_bits}"
            parts.append(f"{name} {bits}/{kind}{pruned_percent(layer.prune)}{act}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CompressionPlan:
        try:
            return cls(
                layers={name: LayerPlan(**spec) for name, spec in raw["layers"].items()},
                distill=DistillPlan(**raw.get("distill", {})),
                finetune=FinetunePlan(**raw.get("finetune", {})),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError("plan", f"not a compression plan ({exc})") from None
