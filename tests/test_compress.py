"""compress / materialize: the student a plan builds, and the plain copy a deployment runs."""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize

from autocompress.compress import compress, materialize
from autocompress.models import build_model
from autocompress.plan import CompressionPlan, LayerPlan

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
