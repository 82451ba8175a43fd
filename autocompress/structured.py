"""Structured pruning: physically remove output channels (conv) and neurons (linear).

Masks (``prune.py``) make a file smaller but not the arithmetic; removing whole channels leaves
smaller dense layers that run faster on any backend. Removing a layer's outputs also removes
whatever consumes them (the next layer's inputs, BatchNorm channels, a flatten's features) and
whatever must stay the same width (layers added in a residual, a depthwise convolution and the
layer feeding it). Torch-Pruning's ``DependencyGraph`` finds these coupled groups by tracing one
forward pass; this is the only module that imports ``torch_pruning``. Its pruners shrink the
existing modules in place, so module identity and qualified names stay valid, and the result is
an ordinary model: ``prune_``/``quantize_`` apply on top, it deep-copies and has a state_dict.

The rules, applied by ``prune_channels_``:

- **What**: in a group, channel ``c`` scores the sum of ``||W[c]||_2^2`` over every
  Linear/Conv layer of the group whose output ``c`` is removed (for an uncoupled layer, the L2
  magnitude of its own channel). Scores come from the weights before this call changes
  anything, and of equal scores the lower index goes first, so the kept channels depend only
  on the model and the ratios, not on the order of ``ratios``.
- **How many**: ``round(r * n)`` of a layer's ``n`` outputs, always keeping at least one. A
  grouped (not depthwise) convolution in the group splits the channels into ``g`` equal
  channel groups that must stay equal: then ``round(r * n / g)`` go from each, the same
  positions in each channel group (a grouped convolution reached through a concatenation or
  split is refused).
- **Coupled layers**: a group is pruned once, with the **largest** ratio given for any of its
  layers (order-independent, and every named layer loses at least what it asked for). Coupled
  layers not named in ``ratios`` shrink with it and are reported too.
- **The output layer** (whose outputs are the model's outputs) and anything coupled to it is
  refused: removing logits would change the task. Afterwards the model must still run on the
  example input with the same output shape (a forward that hard-codes channel counts cannot).

Rebuilding: a structurally pruned model's state_dict does not fit the unpruned architecture.
Rebuild it by running ``prune_channels_`` with the same ratios on a copy of the same teacher
(deterministic, per the rules above), then ``load_state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn.utils import parametrize

from autocompress._imports import first_line
from autocompress.errors import ConfigError
from autocompress.models import COMPRESSIBLE_TYPES, compressible_layers
from autocompress.prune import compressible_layer


def prune_channels_(
    model: nn.Module, ratios: Mapping[str, float], example_input: Tensor
) -> dict[str, tuple[int, int]]:
    """Remove the lowest-magnitude outputs of each named layer (and their dependants) in place.

    ``example_input`` is one batch the model accepts; it is traced once in eval mode (running
    statistics are not touched). Must come before ``prune_`` and ``quantize_``. Returns
    ``name -> (outputs before, outputs after)`` for every layer named with a ratio above 0
    and every Linear/Conv layer that lost outputs through coupling, in ``named_modules`` order.
    Bad requests raise ConfigError before anything changes; a model whose forward cannot
    follow the removal (e.g. hard-coded split sizes) raises ConfigError after, left pruned.
    """
    named = _checked(model, ratios)
    if not named:
        return {}
    before = {name: _outputs(layer) for name, layer in compressible_layers(model).items()}
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    try:
        expected = _output_shape(model, example_input)
        graph = _trace(model, example_input)
        cuts = [
            (root, _pruned_indices(graph, root, ratio, field))
            for root, ratio, field in _coupled_groups(graph, model, named, ratios)
        ]
        for root, indices in cuts:
            if indices:
                graph.get_pruning_group(root, _out_fn(graph, root), indices).prune()
        _check_runs(model, example_input, expected)
    finally:
        # the pruners build new Parameters (requires_grad=True); tracing switched to eval mode
        for name, p in model.named_parameters():
            p.requires_grad_(requires_grad[name])
        model.train(was_training)
    after = {name: _outputs(layer) for name, layer in compressible_layers(model).items()}
    return {
        name: (before[name], after[name])
        for name in before
        if name in named or before[name] != after[name]
    }


def _checked(model: nn.Module, ratios: Mapping[str, float]) -> dict[str, nn.Module]:
    """The layers to prune (ratio > 0), in ``named_modules`` order; ConfigError on bad input."""
    for name, ratio in ratios.items():
        field = f"prune/{name}"
        compressible_layer(model, name, field)
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1:
            raise ConfigError(field, "ratio must be in [0, 1)")
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError("prune", "structured pruning must come before masks and quantization")
    return {name: layer for name, layer in model.named_modules() if ratios.get(name, 0) > 0}


def _output_shape(model: nn.Module, example_input: Tensor) -> tuple[int, ...]:
    """One eval-mode forward, also so that a bad example input fails with the model's own error
    (torch_pruning would retry it as ``model((example_input,))``)."""
    model.eval()
    with torch.no_grad():
        return tuple(model(example_input).shape)


def _check_runs(model: nn.Module, example_input: Tensor, expected: tuple[int, ...]) -> None:
    """The pruned model must still run: a forward that hard-codes channel counts (split sizes,
    reshapes) is beyond what the graph can rewrite, and so are a few rare couplings."""
    try:
        got: object = _output_shape(model, example_input)
    except Exception as exc:
        got = first_line(exc)
    if got != expected:
        raise ConfigError(
            "prune",
            f"the pruned model fails on the example input (expected outputs of shape {expected}, "
            f"got {got}); its forward may hard-code channel counts",
        )


def _trace(model: nn.Module, example_input: Tensor) -> tp.DependencyGraph:
    """The dependency graph of one eval-mode forward pass (autograd records the edges)."""
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    with torch.enable_grad():
        # a tuple, since torch_pruning first tries model(*example_inputs)
        return tp.DependencyGraph().build_dependency(model, (example_input,), verbose=False)


def _coupled_groups(
    graph: tp.DependencyGraph,
    model: nn.Module,
    named: Mapping[str, nn.Module],
    ratios: Mapping[str, float],
) -> list[tuple[nn.Module, float, str]]:
    """One ``(root layer, ratio, field)`` per coupled group: the largest ratio of its layers,
    the field of the first named layer that asked for it."""
    names = {module: name for name, module in model.named_modules()}
    groups: list[tuple[nn.Module, float, str]] = []
    seen: set[nn.Module] = set()
    for name, layer in named.items():
        field = f"prune/{name}"
        if layer in seen:
            continue
        if layer not in graph.module2node:
            raise ConfigError(field, f"{name!r} is not used in the model's forward pass")
        group = graph.get_pruning_group(layer, _out_fn(graph, layer), list(range(_outputs(layer))))
        shrinking = [item.dep.target for item in group.items if _removes_outputs(graph, item)]
        if any(not node.outputs for node in shrinking):
            raise ConfigError(
                field,
                f"{name!r} is the output layer (or coupled to it); its outputs cannot be removed",
            )
        members = [node.module for node in shrinking if isinstance(node.module, COMPRESSIBLE_TYPES)]
        seen.update(members)
        ratio = max(ratios.get(names[m], 0.0) for m in members)
        groups.append((layer, ratio, field))
    return groups


def _pruned_indices(
    graph: tp.DependencyGraph, root: nn.Module, ratio: float, field: str
) -> list[int]:
    """The root layer's output indices to remove, lowest group score first (see the module)."""
    n = _outputs(root)
    group = graph.get_pruning_group(root, _out_fn(graph, root), list(range(n)))
    chunks = _channel_groups(graph, group, field)
    size = n // chunks
    count = min(round(ratio * size), size - 1)
    score = torch.zeros(n, dtype=torch.float64)
    for item in group.items:
        layer = item.dep.target.module
        if _removes_outputs(graph, item) and isinstance(layer, COMPRESSIBLE_TYPES):
            weight = layer.weight
            assert isinstance(weight, Tensor)
            rows = weight.detach()[item.idxs].flatten(1)
            score.index_add_(0, torch.tensor(item.root_idxs), rows.double().pow(2).sum(1).cpu())
    local = torch.argsort(score.view(chunks, size).sum(0), stable=True)[:count]
    return sorted(int(i) + c * size for c in range(chunks) for i in local)


def _channel_groups(graph: tp.DependencyGraph, group: Any, field: str) -> int:
    """How many equal channel groups a group's channels form (1 without grouped convs).

    A depthwise convolution (groups == out_channels) is exempt: it shrinks channel by channel.
    A grouped one must see exactly the root's channels, in order (no concatenation or split
    between them), or equal slots per channel group would not be equal slots of the root.
    """
    chunks = 1
    for item in group.items:
        layer = item.dep.target.module
        if not isinstance(layer, nn.Conv1d | nn.Conv2d):
            continue
        if layer.groups > 1 and layer.groups != layer.out_channels:
            side = layer.out_channels if _removes_outputs(graph, item) else layer.in_channels
            if list(item.idxs) != list(item.root_idxs) or len(item.idxs) != side:
                raise ConfigError(
                    field,
                    "channels reach a grouped convolution through a concatenation or "
                    "split, which is not supported",
                )
            chunks = math.lcm(chunks, layer.groups)
    return chunks


def _removes_outputs(graph: tp.DependencyGraph, item: Any) -> bool:
    return bool(graph.is_out_channel_pruning_fn(item.dep.handler))


def _out_fn(graph: tp.DependencyGraph, layer: nn.Module) -> Any:
    return graph.get_pruner_of_module(layer).prune_out_channels


def _outputs(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return layer.out_features
    assert isinstance(layer, nn.Conv1d | nn.Conv2d)
    return layer.out_channels
