"""Unstructured magnitude pruning through a weight parametrization.

A ``WeightMask`` is registered on the layer's ``weight`` with
``torch.nn.utils.parametrize``: ``layer.weight`` is then always ``original * mask``. Optimizer
steps act on ``parametrizations.weight.original``, but the mask multiplies every forward pass,
so pruned weights stay exactly zero through fine-tuning, and the model remains an ordinary
module that trains, deep-copies and round-trips through ``state_dict`` (the mask is a buffer).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from autocompress.errors import ConfigError
from autocompress.models import COMPRESSIBLE_TYPES


def compressible_layer(model: nn.Module, name: str, field: str) -> nn.Module:
    """The compressible layer called ``name`` in ``model.named_modules()``, else ConfigError."""
    layer = dict(model.named_modules()).get(name)
    if layer is None or not isinstance(layer, COMPRESSIBLE_TYPES):
        raise ConfigError(field, f"{name!r} is not a Linear, Conv1d or Conv2d layer of the model")
    return layer


def magnitude_mask(weight: Tensor, ratio: float, keep_rows: bool = False) -> Tensor:
    """A float mask of ``weight``'s shape with exactly ``round(ratio * numel)`` zeros.

    The zeros sit at the smallest ``|w|``; of equal magnitudes at the threshold the lowest flat
    (row-major) positions go first, so the same weight always gives the same mask and the count
    is exact even when many weights are equal (e.g. already zero): the mask a stable sort would
    give. A selection (``_kth_smallest``) finds the threshold instead of sorting: the sort of
    LeNet-300-100's 235,200 fc1 weights was most of a trial's compression step.

    ``keep_rows``: each output channel (row) keeps its largest weight, so at most
    ``numel - rows`` zeros. For the output layer: an empty row is a class whose logit is a
    constant, which no fine-tuning can repair (a layer-wide ramp to 98% on LeNet-300-100's
    fc3 emptied one and left the model at 67% accuracy).
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    magnitude = weight.detach().reshape(-1).abs()
    n_zero = round(ratio * magnitude.numel())
    if keep_rows:
        rows = magnitude.reshape(weight.shape[0], -1)
        largest = rows.argmax(dim=1) + torch.arange(
            0, magnitude.numel(), rows.shape[1], device=magnitude.device
        )
        magnitude = magnitude.index_fill(0, largest, torch.inf)
        n_zero = min(n_zero, magnitude.numel() - rows.shape[0])
    mask = torch.ones_like(magnitude)
    if n_zero:
        threshold = _kth_smallest(magnitude, n_zero)
        below = magnitude < threshold
        ties = torch.nonzero(magnitude == threshold).reshape(-1)
        mask[below] = 0.0
        mask[ties[: n_zero - int(below.sum())]] = 0.0
    return mask.reshape(weight.shape)


def _kth_smallest(values: Tensor, k: int) -> Tensor:
    """The ``k``-th smallest (1-based) of a flat tensor, as a 0-d tensor on its device.

    On CPU numpy's introselect (``np.partition``) is about ten times faster than
    ``torch.kthvalue``: 0.4 against 4.5 ms for LeNet-300-100's fc1 (``compress`` runs it once
    per layer per trial, gradual pruning ten times per layer). Elsewhere, and for dtypes numpy
    lacks, ``kthvalue``.
    """
    if values.device.type == "cpu" and values.dtype != torch.bfloat16:
        array = values.numpy()
        return torch.as_tensor(np.partition(array, k - 1)[k - 1])
    return torch.kthvalue(values, k).values


class WeightMask(nn.Module):
    """Parametrization ``w -> w * mask``; the mask is a buffer so it lives in ``state_dict``."""

    mask: Tensor

    def __init__(self, mask: Tensor, keep_rows: bool = False) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().clone())
        self.keep_rows = keep_rows  # GradualPruning's masks keep every row too

    def forward(self, w: Tensor) -> Tensor:
        return w * self.mask


class DeadChannelBias(nn.Module):
    """Parametrization ``b -> b * live``: zero bias for output channels whose weights are all
    pruned.

    Such a channel outputs a constant, which the next layer's bias can absorb (fine-tuning
    learns to), so the file need not store its bias (docs/FORMAT.md): at 99.9% sparsity most of
    a wide layer's channels are empty, and their biases were up to a sixth of the file. The live set
    is read from the weight's mask on every call, so it follows ``GradualPruning``.
    """

    weight_mask: WeightMask

    def __init__(self, weight_mask: WeightMask) -> None:
        super().__init__()
        # A plain reference, not a submodule: the mask belongs to the weight's chain (and to
        # state_dict once); deepcopy maps it to the copy's own mask.
        self.__dict__["weight_mask"] = weight_mask

    def forward(self, b: Tensor) -> Tensor:
        mask = self.weight_mask.mask
        # A row's max, not ne(0).any(): 16 times faster on fc1's 235,200-entry 0/1 mask (30
        # against 480 us), which made this a fifth of a LeNet-300-100 training step.
        return b * mask.reshape(mask.shape[0], -1).amax(dim=1).ne(0).to(b.dtype)


def prune_(model: nn.Module, ratios: Mapping[str, float], keep_rows: Collection[str] = ()) -> None:
    """Prune each named layer in place to its ratio of zero weights (smallest magnitudes), and
    zero the bias of any output channel left without weights (``DeadChannelBias``). Layers
    named in ``keep_rows`` (the output layer) keep a weight in every output channel.

    Must run before ``quantize_`` so that the mask is the first parametrization and the
    quantization scales are computed from the masked weights. Ratio 0 registers nothing.
    """
    for name, ratio in ratios.items():
        field = f"prune/{name}"
        layer = compressible_layer(model, name, field)
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(field, "ratio must be in [0, 1)")
        if parametrize.is_parametrized(layer, "weight"):
            raise ConfigError(field, "layer is already pruned or quantized; prune once, first")
        if ratio == 0.0:
            continue
        weight = layer.weight
        assert isinstance(weight, Tensor)
        keep = name in keep_rows
        _register_mask(layer, WeightMask(magnitude_mask(weight, ratio, keep), keep))


def _register_mask(layer: nn.Module, mask: WeightMask) -> None:
    # unsafe: skip torch's check that a parametrization keeps shape and dtype, which these do
    # by construction; the check evaluates the layer's whole chain at each registration.
    parametrize.register_parametrization(layer, "weight", mask, unsafe=True)
    if isinstance(getattr(layer, "bias", None), Tensor):
        parametrize.register_parametrization(layer, "bias", DeadChannelBias(mask), unsafe=True)


def drop_zero_inputs_(model: nn.Module, zero_inputs: Mapping[str, Tensor]) -> dict[str, int]:
    """Mask every weight that reads an input found always zero (``probe.zero_inputs``);
    returns layer name -> weights dropped, for layers that lost any.

    Run after ``prune_``, whose emptied channels make those zeros, and before ``quantize_``, so
    the scales come from what is kept. The masked model computes the same function (a row this
    would empty keeps its largest weight, because an empty row's bias is zeroed); quantized,
    a channel's scale may shrink where its largest weight read a zero. A layer ``prune_``
    left unmasked gets its mask here. In a 453x LeNet-5 plan (fc1 99.9% pruned, fc2 72%), 913
    of fc2's 1,400 kept weights read fc1 units that have no weights.
    """
    dropped: dict[str, int] = {}
    for name, zero in zero_inputs.items():
        if not bool(zero.any()):
            continue
        layer = compressible_layer(model, name, f"prune/{name}")
        weight = layer.weight
        assert isinstance(weight, Tensor)
        mask = _weight_mask(layer)
        if mask is None and parametrize.is_parametrized(layer, "weight"):
            continue  # parametrized by something else: not ours to mask
        kept = mask.mask != 0 if mask is not None else torch.ones_like(weight, dtype=torch.bool)
        drop = kept & _reads(layer, zero.to(weight.device)).expand_as(kept)
        kept_rows, drop_rows = kept.view(len(weight), -1), drop.view(len(weight), -1)
        emptied = kept_rows.any(dim=1) & ~(kept_rows & ~drop_rows).any(dim=1)
        if bool(emptied.any()):
            magnitude = weight.detach().abs().reshape(len(weight), -1)
            largest = magnitude.masked_fill(~kept_rows, -1).argmax(dim=1)
            drop_rows[emptied.nonzero().squeeze(1), largest[emptied]] = False
        count = int(drop.sum())
        if not count:
            continue
        if mask is None:
            _register_mask(layer, WeightMask((~drop).to(weight.dtype)))
        else:
            mask.mask.masked_fill_(drop, 0.0)
        dropped[name] = count
    return dropped


def _weight_mask(layer: nn.Module) -> WeightMask | None:
    """The layer's ``WeightMask``, the first of its weight's parametrizations, if it has one."""
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    chain = _weight_chain(layer)
    return chain[0] if isinstance(chain[0], WeightMask) else None


def _weight_chain(layer: nn.Module) -> parametrize.ParametrizationList:
    parametrizations = layer.parametrizations
    assert isinstance(parametrizations, nn.ModuleDict)
    chain = parametrizations["weight"]
    assert isinstance(chain, parametrize.ParametrizationList)
    return chain


def _reads(layer: nn.Module, zero: Tensor) -> Tensor:
    """Bool of shape ``(out, in per group, 1, ...)``, broadcastable to the weight: True where a
    weight reads an input feature (Linear) or channel (Conv) flagged in ``zero``."""
    weight = layer.weight
    assert isinstance(weight, Tensor)
    groups = layer.groups if isinstance(layer, nn.Conv1d | nn.Conv2d) else 1
    per_group = zero.reshape(groups, -1)  # group g reads channels g * in/groups onwards
    reads = per_group.repeat_interleave(weight.shape[0] // groups, dim=0)
    return reads.reshape(*reads.shape, *[1] * (weight.dim() - 2))


def cubic_ratio(final: float, progress: float) -> float:
    """Zhu & Gupta's schedule ("To prune, or not to prune", 2017): sparsity rises fast while
    many weights are redundant and slowly near the end, when each removal costs accuracy."""
    progress = min(max(progress, 0.0), 1.0)
    return final * (1.0 - (1.0 - progress) ** 3)


class GradualPruning:
    """Grows each unstructured mask from nothing to its planned count during fine-tuning.

    One-shot pruning removes up to 99% of a layer's weights before any retraining; here the
    network adapts as they go. The planned masks (``prune_`` has registered them) give each
    layer's final count of zeros; they are reset to all-ones and recomputed by magnitude at
    ``updates`` evenly spaced steps of the first ``ramp_steps`` optimizer steps, each from the
    currently masked weights, so a pruned weight never returns. After ``ramp_steps`` every
    layer holds exactly its planned count of zeros, and the rest of fine-tuning recovers.
    Called with the 1-based optimizer step after each step (``fit``'s ``on_step``).
    """

    def __init__(self, model: nn.Module, ramp_steps: int, updates: int = 10) -> None:
        self.ramp_steps = max(ramp_steps, 1)
        self.every = max(self.ramp_steps // max(updates, 1), 1)
        self.layers: list[tuple[Tensor, WeightMask, float]] = []
        for module in model.modules():
            mask = _weight_mask(module)
            if mask is not None:
                final = float((mask.mask == 0).sum().item()) / mask.mask.numel()
                self.layers.append((_weight_chain(module).original, mask, final))
                mask.mask.fill_(1.0)

    @torch.no_grad()
    def __call__(self, step: int) -> None:
        if step > self.ramp_steps or (step % self.every and step != self.ramp_steps):
            return
        for original, mask, final in self.layers:
            ratio = final if step == self.ramp_steps else cubic_ratio(final, step / self.ramp_steps)
            mask.mask.copy_(magnitude_mask(original * mask.mask, ratio, mask.keep_rows))
