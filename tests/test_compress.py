"""compress / materialize: the student a plan builds, and the plain copy a deployment runs."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from autocompress.compress import compress, materialize
from autocompress.models import build_model
from autocompress.plan import CompressionPlan, FinetunePlan, LayerPlan
from autocompress.quantize import WeightFakeQuant

PLAN = CompressionPlan(
    layers={
        "conv1": LayerPlan(bits=4, prune=0.3, act_bits=8),
        "conv2": LayerPlan(bits=2, prune=0.9),
        "fc1": LayerPlan(bits=16, prune=0.5),
        "fc2": LayerPlan(bits=32, prune=0.2),
    }
)


def test_materialize_bakes_masks_and_quantizers_and_leaves_the_student_alone() -> None:
    torch.manual_seed(0)
    teacher = build_model("lenet5", (1, 28, 28), 10)
    student = compress(teacher, PLAN, torch.zeros(2, 1, 28, 28)).eval()
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        expected = student(x)
    plain = materialize(student)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert not plain.training
    with torch.no_grad():
        assert torch.equal(plain(x), expected)
        # the student still has its parametrizations (a shared class would have lost them)
        for name in ("conv1", "conv2", "fc1"):
            layer = student.get_submodule(name)
            assert parametrize.is_parametrized(layer, "weight")
            assert parametrize.is_parametrized(layer, "bias")
            assert torch.equal(layer.weight, plain.get_submodule(name).weight)
        # float32 layer: no float16 rounding, only the bias of channels pruned empty is zeroed
        assert [type(p).__name__ for p in student.fc2.parametrizations.bias] == ["DeadChannelBias"]
        assert torch.equal(student(x), expected)
    assert int((student.conv2.weight == 0).sum()) >= round(0.9 * student.conv2.weight.numel())


def test_a_sparse_plan_drops_weights_reading_empty_units_and_keeps_every_class() -> None:
    """fc1 at 99.9% leaves most of its 500 units without weights; fc2's weights on them
    multiply zero, so compress drops them. The gradual schedule keeps the planned count."""
    torch.manual_seed(0)
    teacher = build_model("lenet5", (1, 28, 28), 10)
    layers = {
        "conv1": LayerPlan(bits=4, prune=0.5),
        "conv2": LayerPlan(bits=4, prune=0.5),
        "fc1": LayerPlan(bits=4, prune=0.999),
        "fc2": LayerPlan(bits=6, prune=0.7),
    }
    example = torch.randn(2, 1, 28, 28)
    student = compress(teacher, CompressionPlan(layers=layers), example)
    live = (student.fc1.weight != 0).any(dim=1)
    kept = student.fc2.weight != 0
    assert int(live.sum()) < 400  # at most 400 weights: most units are empty
    assert int(kept.sum()) < 1500  # the plan keeps 30% of 5,000
    assert not kept[:, ~live].any()  # no row of fc2 read only empty units here
    assert bool(kept.any(dim=1).all())  # every class keeps a weight
    gradual = CompressionPlan(layers=layers, finetune=FinetunePlan(prune_schedule="gradual"))
    assert int((compress(teacher, gradual, example).fc2.weight != 0).sum()) == 1500


def test_compress_quantizes_no_weight_while_building(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering a parametrization checks it by evaluating the layer's whole chain unless
    told not to; the student's first forward pass is the first to quantize a weight."""
    calls: list[int] = []
    inner = WeightFakeQuant.forward

    def counted(self: WeightFakeQuant, w: torch.Tensor) -> torch.Tensor:
        calls.append(self.bits)
        return inner(self, w)

    monkeypatch.setattr(WeightFakeQuant, "forward", counted)
    teacher = build_model("lenet5", (1, 28, 28), 10)
    student = compress(teacher, PLAN, torch.zeros(2, 1, 28, 28))
    assert calls == []
    student(torch.zeros(1, 1, 28, 28))
    assert sorted(calls) == [2, 4, 16]
