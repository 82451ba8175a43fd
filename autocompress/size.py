"""The compressed model's size in bytes, every stored bit counted.

This is the formula the search minimizes until the packed file format replaces it. For each
compressible layer (Linear, Conv1d, Conv2d) with effective weight ``W = layer.weight`` of
``n`` elements, quantized to ``b`` bits (``b`` in 1..15 integer levels, 16 fp16, 32 float),
``k`` = the nonzeros of ``quantize_weight(W, b)`` (the quantized weight: rounding may add
zeros to the pruned ones) and ``vb = b`` bits per stored value (b-bit codes, fp16 or float32):

- **values and positions**: the cheapest of
  (a) ``dense``: all ``n`` values, no index: ``n*vb`` value bits, 0 index bits;
  (b) ``bitmap``: one bit per element plus the nonzero values: ``n`` index bits, ``k*vb``;
  (c) ``delta{g}`` for ``g`` in 1..16 (Deep Compression's relative index): the flat row-major
  positions of the nonzeros, as gaps from the previous nonzero (the first from position -1),
  each in a ``g``-bit field holding at most ``M = 2**g - 1``. A gap ``d > M`` is preceded by
  filler entries that advance ``M`` positions and store a zero value, so a gap takes
  ``ceil(d / M)`` entries, and with ``E`` the total entries: ``E*g`` index bits, ``E*vb``
  value bits. Positions after the last nonzero need no entries (``n`` is in the header).
  Ties go to dense, then bitmap, then the smallest ``g``. At 1 bit the values are ``{-s, +s}``
  and cannot store a zero, so an encoding that would store one (dense with ``k < n``, delta
  with fillers) is not a candidate there.
- **scales**: 8 bits (``quantize.scale_grid``'s field) per *live* output channel (dim 0: one
  with a nonzero in the quantized weight) when ``b`` is 1..15, else 0. An empty channel's
  weights are all zero whatever its scale, so the file stores none for it.
- **bias**: 16 bits (float16) per element when ``b`` is not 32 (``quantize_`` rounds a
  quantized layer's bias to float16 values), else 32; 0 if the layer has no bias. Only live
  channels' elements count when every other channel's bias is zero (``prune_`` zeroes the bias
  of a channel it empties), since the file then stores those alone.
- **activation**: 32 bits (one float scale) if the layer has an integer ``input_quant``
  ``ActFakeQuant``; 0 without one or for fp16 activations, which need no scale.
- **header**: a fixed 64 bits per layer (bit widths, encoding kind and ``g``, signed flag,
  counts).

Everything else (``other_bits``) is stored as float32: 32 bits per element of every parameter
and buffer outside the compressible layers (BatchNorm weight, bias, running mean and variance,
any other module's parameters), except BatchNorm's ``num_batches_tracked``, which inference
does not need. Parametrization internals (``original``, ``mask``) and ``ActFakeQuant`` buffers
live inside the compressible layers and are counted by the terms above only. The size in bytes
is ``ceil((sum of every layer's bits + other_bits) / 8)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from autocompress.errors import ConfigError
from autocompress.models import COMPRESSIBLE_TYPES
from autocompress.prune import compressible_layer
from autocompress.quantize import (
    FLOAT_BITS,
    FP16_BITS,
    INT_BITS,
    SCALE_BITS,
    ActFakeQuant,
    check_bits,
    quantize_weight,
    weight_quantizer,
)

FLOAT_FIELD_BITS = 32
FP16_FIELD_BITS = 16
HEADER_BITS = 64
MAX_DELTA_BITS = 16


@dataclass(frozen=True)
class LayerSize:
    """One compressible layer's stored bits.

    ``bits`` is the width; every ``*_bits`` field is a total for the layer (``value_bits``
    includes the zero values of delta fillers); ``nonzero`` counts the quantized weight.
    """

    name: str
    numel: int
    nonzero: int
    bits: int
    value_bits: int
    index_kind: str
    index_bits: int
    scale_bits: int
    bias_bits: int
    act_bits: int
    header_bits: int

    @property
    def total_bits(self) -> int:
        return (
            self.value_bits
            + self.index_bits
            + self.scale_bits
            + self.bias_bits
            + self.act_bits
            + self.header_bits
        )


@dataclass(frozen=True)
class ModelSize:
    """Per-layer sizes plus the float32 bits of everything outside the compressible layers."""

    layers: tuple[LayerSize, ...]
    other_bits: int

    @property
    def total_bits(self) -> int:
        return sum(layer.total_bits for layer in self.layers) + self.other_bits

    @property
    def total_bytes(self) -> int:
        return (self.total_bits + 7) // 8


def layer_float_bits(bits: int) -> int:
    """Width of a layer's bias (and, at 1..15 bits, scale) fields: float16 unless the layer is
    left in float32."""
    return FLOAT_FIELD_BITS if bits == FLOAT_BITS else FP16_FIELD_BITS


def cheapest_encoding(nonzero: np.ndarray, bits: int) -> tuple[str, int, int]:
    """``(index_kind, index_bits, value_bits)`` of the cheapest position encoding.

    ``nonzero`` is the flat (row-major) boolean nonzero pattern of the quantized weight.
    """
    flat = np.asarray(nonzero, dtype=bool).reshape(-1)
    n = int(flat.size)
    vb = bits  # b for integer widths, 16 for fp16, 32 for float: always the width itself
    positions = np.flatnonzero(flat)
    k = int(positions.size)
    stores_zero_ok = bits != 1
    candidates: list[tuple[str, int, int]] = []
    if stores_zero_ok or k == n:
        candidates.append(("dense", 0, n * vb))
    candidates.append(("bitmap", n, k * vb))
    gaps = np.diff(positions, prepend=-1)
    for g in range(1, MAX_DELTA_BITS + 1):
        m = 2**g - 1
        entries = int(np.sum((gaps + m - 1) // m))
        if stores_zero_ok or entries == k:
            candidates.append((f"delta{g}", entries * g, entries * vb))
    # min() keeps the first of equal totals: dense, then bitmap, then the smallest g.
    return min(candidates, key=lambda c: c[1] + c[2])


def _layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if isinstance(module, COMPRESSIBLE_TYPES):
            yield name, module


def _weight(layer: nn.Module) -> Tensor:
    weight = layer.weight
    assert isinstance(weight, Tensor)
    return weight.detach()


def live_channels(nonzero: np.ndarray, channels: int) -> np.ndarray:
    """Output channels (dim 0) of a flat nonzero pattern that hold a nonzero: the only ones
    whose scale matters. At 99% sparsity most rows of a wide layer are empty (LeNet-5's fc1 at
    0.07% kept: 350 of 500)."""
    if nonzero.size == 0:
        return np.zeros(channels, dtype=bool)
    return np.asarray(nonzero.reshape(channels, -1).any(axis=1))


def bias_of_live_only(bias: Tensor, live: np.ndarray) -> bool:
    """Whether the file stores the live channels' biases alone: every other one is zero."""
    return not bool(bias.detach()[torch.from_numpy(~live)].any())


def _stored_bias_numel(layer: nn.Module, live: np.ndarray) -> int:
    bias = getattr(layer, "bias", None)
    if not isinstance(bias, Tensor):
        return 0
    return int(live.sum()) if bias_of_live_only(bias, live) else bias.numel()


def _bias_numel(layer: nn.Module) -> int:
    bias = getattr(layer, "bias", None)
    return bias.numel() if isinstance(bias, Tensor) else 0


def other_tensors(model: nn.Module, layer_names: set[str]) -> list[tuple[str, Tensor]]:
    """Parameters and buffers outside the compressible layers, which the file stores as they
    are; BatchNorm's ``num_batches_tracked`` is left out (inference does not read it)."""

    def owned(qualified: str) -> bool:
        parts = qualified.split(".")
        return any(".".join(parts[:i]) in layer_names for i in range(len(parts)))

    named = [*model.named_parameters(), *model.named_buffers()]
    return [
        (name, tensor)
        for name, tensor in named
        if not owned(name) and not name.endswith("num_batches_tracked")
    ]


def _other_numel(model: nn.Module, layer_names: set[str]) -> int:
    """Elements of ``other_tensors`` (float32 storage)."""
    return sum(tensor.numel() for _, tensor in other_tensors(model, layer_names))


def float32_bytes(model: nn.Module) -> int:
    """Bytes of the model stored uncompressed in float32, as inference needs it.

    Counts each compressible layer's (effective) weight and bias, and every other parameter
    and buffer except ``num_batches_tracked``; masks and quantizer state are not part of a
    float model.
    """
    layers = dict(_layers(model))
    numel = sum(_weight(layer).numel() + _bias_numel(layer) for layer in layers.values())
    return 4 * (numel + _other_numel(model, set(layers)))


def weight_sparsity(model: nn.Module) -> float:
    """The share of zeros among the compressible layers' effective weights. A student's are
    already masked and quantized, so zeros from rounding count too, as in ``model_size``'s
    ``nonzero``: a trial reports this without the formula's encodings (2 ms of a 1.2 s
    LeNet-300-100 trial, and the file's length is the size)."""
    total = nonzero = 0
    for _, layer in _layers(model):
        weight = _weight(layer)
        total += weight.numel()
        nonzero += int(torch.count_nonzero(weight))
    return 1 - nonzero / total if total else 0.0


def model_size(model: nn.Module, bits: Mapping[str, int]) -> ModelSize:
    """The size of ``model`` compressed at ``bits`` per layer (missing layers: 32 bits).

    Works on a plain model (the size a plan would give) and on a pruned and quantized one; a
    layer already fake-quantized to a width other than its entry in ``bits`` is a ConfigError.
    """
    layers = dict(_layers(model))
    for name in bits:
        compressible_layer(model, name, f"bits/{name}")
    sizes: list[LayerSize] = []
    for name, layer in layers.items():
        field = f"bits/{name}"
        b = bits.get(name, FLOAT_BITS)
        check_bits(b, field)
        quantizer = weight_quantizer(layer)
        if quantizer is not None and quantizer.bits != b:
            raise ConfigError(field, f"is {b} but the layer is quantized to {quantizer.bits} bits")
        weight = _weight(layer)
        quantized = quantize_weight(weight, b)[0]
        nonzero = (quantized != 0).reshape(-1).cpu().numpy()
        live = live_channels(nonzero, weight.shape[0])
        kind, index_bits, value_bits = cheapest_encoding(nonzero, b)
        act = getattr(layer, "input_quant", None)
        has_act_scale = isinstance(act, ActFakeQuant) and act.bits != FP16_BITS
        sizes.append(
            LayerSize(
                name=name,
                numel=weight.numel(),
                nonzero=int(nonzero.sum()),
                bits=b,
                value_bits=value_bits,
                index_kind=kind,
                index_bits=index_bits,
                scale_bits=SCALE_BITS * int(live.sum()) if b in INT_BITS else 0,
                bias_bits=layer_float_bits(b) * _stored_bias_numel(layer, live),
                act_bits=FLOAT_FIELD_BITS if has_act_scale else 0,
                header_bits=HEADER_BITS,
            )
        )
    other = FLOAT_FIELD_BITS * _other_numel(model, set(layers))
    return ModelSize(layers=tuple(sizes), other_bits=other)
