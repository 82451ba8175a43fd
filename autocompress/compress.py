"""Plan -> compressed student: a pruned and fake-quantized copy of the teacher.

The same function builds a trial's student and rebuilds a saved one (its state_dict, masks
included, loads into ``compress(teacher, plan, example)``: structured pruning is deterministic),
so a Pareto point needs only its plan and weights to come back.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocompress.plan import CompressionPlan
from autocompress.probe import output_layer, zero_inputs
from autocompress.prune import drop_zero_inputs_, prune_
from autocompress.quantize import quantize_
from autocompress.structured import prune_channels_


def compress(teacher: nn.Module, plan: CompressionPlan, example: torch.Tensor) -> nn.Module:
    """``example``: one input batch, traced to find the channels that structured pruning removes
    together (residuals, BatchNorm, depthwise convolutions), and probed (``probe.py``) for
    the output layer and for the inputs that emptied channels hold at zero."""
    student = copy.deepcopy(teacher)
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    # Channels first (it needs plain layers), then masks, so quantization scales are computed
    # from the weights that survive.
    if plan.structured_ratios:
        prune_channels_(student, plan.structured_ratios, example)
    # The output layer keeps a weight per class: an empty row is a constant logit.
    output = output_layer(student, example)
    prune_(student, plan.unstructured_ratios, keep_rows=[output] if output else [])
    # Weights that read a channel the masks emptied multiply zero: the file need not hold them.
    # Not with the gradual schedule, whose masks start full and grow by magnitude.
    if plan.finetune.prune_schedule == "oneshot":
        drop_zero_inputs_(student, zero_inputs(student, example))
    quantize_(student, plan.bits, plan.act_bits)
    return student


def materialize(student: nn.Module) -> nn.Module:
    """A copy with the masks and weight quantization baked into plain weights: what a deployed
    model computes (activation quantizers stay), so its latency is the one worth measuring."""
    plain = copy.deepcopy(student)
    for module in plain.modules():
        if not parametrize.is_parametrized(module):
            continue
        parametrizations = module.parametrizations
        assert isinstance(parametrizations, nn.ModuleDict)
        with torch.no_grad():
            values = {name: getattr(module, name).clone() for name in parametrizations}
        # Not parametrize.remove_parametrizations: a deep copy shares its parametrized class
        # with the student, and removing deletes the class's properties, the student's too.
        module.__class__ = module.__class__.__bases__[0]
        del module.parametrizations
        for name, value in values.items():
            module.register_parameter(name, nn.Parameter(value, requires_grad=False))
    return plain.eval()
