"""Per-layer fake quantization of weights and activations, for every compressible layer kind.

torchao's QAT configs cover ``nn.Linear`` only, so this module quantizes Linear, Conv1d and
Conv2d (grouped and depthwise included) itself, with the same mechanism as pruning: a
``torch.nn.utils.parametrize`` parametrization on ``weight``. ``layer.weight`` is therefore
always the effective, dequantized weight, while the optimizer updates the float
``parametrizations.weight.original`` through a straight-through gradient.

Weights: per output channel (dim 0), symmetric. For ``b`` in 2..15 bits,
``qmax = 2**(b-1) - 1``, ``scale = max|w| / qmax`` over the channel and
``q = clamp(round(w / scale), -qmax, qmax)``: at most ``2**b - 1`` levels and zero stays exactly
zero (so pruned weights remain pruned). ``b == 1`` is the one exception: a 1-bit symmetric
quantizer with a zero level would have no other level, so 1 bit means sign binarization
``{-s, +s}`` with ``s`` the mean ``|w|`` of the channel's nonzero weights, and zeros stay zero
(the sparsity encoding, not the value, carries them). 16 bits is an fp16 round trip, 32 bits
leaves the weight in float.

Scales are rounded up to float16 values with 3 mantissa bits (``scale_grid``), so the file
stores each in one byte, and a quantized layer's bias passes through an fp16 round trip
(``BiasFakeFp16``, straight-through), so it takes 2 bytes instead of 4. At 99% sparsity they
are most of a layer: LeNet-5's fc1 at 2 bits and 0.5% kept stored 3.2 KB of codes and
positions beside 4 KB of float32 scales and biases, and near 400x the float16 scales were
still 14% of a file. Rounding a scale up by at most 1/8 (above 2**-14, where float16 is
normal) costs under 0.2 bits of a code's resolution and never clips the channel's largest
weight.

Activations: ``ActFakeQuant`` quantizes a layer's input per tensor, from a running max-abs
statistic, using the unsigned range when every observed input was non-negative (after ReLU).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from autocompress.errors import ConfigError
from autocompress.prune import compressible_layer

INT_BITS = range(1, 16)
FP16_BITS = 16
FLOAT_BITS = 32
FP16_MAX = float(torch.finfo(torch.float16).max)
SCALE_BITS = 8  # a weight scale's field in the file
# The 248 finite non-negative float16 values whose 7 low mantissa bits are zero, ascending
# (5 exponent bits, 3 mantissa bits, no sign): a scale's field is its index here, which is its
# float16 bit pattern shifted right by 7.
SCALE_FIELDS = 248
_SCALE_MAX = 61440.0  # the last: a Python number, since reading it off a GPU would synchronize

_BITS_MESSAGE = "bits must be 1..15, 16 (fp16) or 32 (float)"
_ACT_BITS_MESSAGE = "activation bits must be 2..15, 16 (fp16) or 32 (float)"


def check_bits(bits: int, field: str) -> None:
    """Raise ConfigError unless ``bits`` is 1..15 (integer levels), 16 (fp16) or 32 (float)."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ConfigError(field, _BITS_MESSAGE)
    if bits not in INT_BITS and bits not in (FP16_BITS, FLOAT_BITS):
        raise ConfigError(field, _BITS_MESSAGE)


def _check_act_bits(bits: int, field: str) -> None:
    """Activation bits: as ``check_bits`` but without 1, since a 1-bit signed range is empty."""
    try:
        check_bits(bits, field)
    except ConfigError:
        raise ConfigError(field, _ACT_BITS_MESSAGE) from None
    if bits == 1:
        raise ConfigError(field, _ACT_BITS_MESSAGE)


def _channel_view(t: Tensor, w: Tensor) -> Tensor:
    """Reshape a per-output-channel vector so it broadcasts against ``w``."""
    return t.reshape(-1, *([1] * (w.dim() - 1)))


def fp16_grid(t: Tensor) -> Tensor:
    """``t`` rounded to the nearest float16 value (saturating at fp16's largest), same dtype:
    what a float16 field of the file holds exactly."""
    return t.clamp(-FP16_MAX, FP16_MAX).to(torch.float16).to(t.dtype)


@functools.cache
def _scale_grid_on(device: torch.device) -> Tensor:
    """The grid on ``device``, made once (before any CUDA graph capture, which could not copy
    it from the host)."""
    patterns = torch.arange(SCALE_FIELDS, dtype=torch.int16) << 7
    return patterns.view(torch.float16).float().to(device)


def scale_grid(t: Tensor, *, up: bool) -> Tensor:
    """Non-negative ``t`` on the scale grid, same dtype: the smallest grid value at or above
    it (``up``: a channel's largest weight then never rounds past ``qmax``) or the nearest,
    saturating at the largest, 61,440."""
    grid = _scale_grid_on(t.device)
    flat = t.detach().float().reshape(-1).clamp(0.0, _SCALE_MAX)
    index = torch.searchsorted(grid, flat)  # the first grid value >= flat
    if not up:
        below = (index - 1).clamp(min=0)
        index = torch.where(flat - grid[below] <= grid[index] - flat, below, index)
    return grid[index].reshape(t.shape).to(t.dtype)


def scale_fields(scale: Tensor) -> bytes | None:
    """Each scale's one-byte field, or None if some scale is off the grid (an older file's)."""
    grid = _scale_grid_on(torch.device("cpu"))
    flat = scale.detach().float().cpu().reshape(-1)
    index = torch.searchsorted(grid, flat).clamp(max=SCALE_FIELDS - 1)
    if not torch.equal(grid[index], flat):
        return None
    return index.numpy().astype(np.uint8).tobytes()


def scales_from_fields(raw: bytes) -> Tensor:
    """Inverse of ``scale_fields``; ValueError for a byte that is no grid value."""
    index = torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).astype(np.int64))
    if len(index) and int(index.max()) >= SCALE_FIELDS:
        raise ValueError(f"scale field {int(index.max())} is not a finite scale (0..247)")
    return _scale_grid_on(torch.device("cpu"))[index]


def integer_codes(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Integer codes (int32) and per-channel scales with ``codes * scale`` the quantized weight.

    A packer stores exactly these, so the unpacked weight reproduces the model bit for bit:
    ``quantize_weight`` is defined as ``codes * scale``. Scales are on the one-byte grid
    (``scale_grid``): rounded up for 2..15 bits, to the nearest for 1 bit (the scale is the
    level itself). All-zero channels get scale 1 and codes 0.
    """
    codes, scale = _codes(w, bits)
    return codes.to(torch.int32), scale


def _codes(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """``integer_codes`` with the codes left in ``w``'s dtype (exact integers there): the
    fake-quantized forward multiplies them at once, and a round trip through int32 was two
    more passes over the weight in every training step."""
    if bits not in INT_BITS:
        raise ValueError(f"integer_codes needs bits in 1..15, got {bits}")
    w = w.detach()
    flat = w.reshape(w.shape[0], -1)
    if bits == 1:
        mean_abs = scale_grid(flat.abs().sum(dim=1) / (flat != 0).sum(dim=1).clamp(min=1), up=False)
        # a channel of zeros (or of subnormals whose mean underflows) quantizes to zeros
        codes = torch.sign(w) * _channel_view(mean_abs > 0, w)
        return codes, torch.where(mean_abs > 0, mean_abs, 1.0)
    qmax = 2 ** (bits - 1) - 1
    scale = scale_grid(flat.abs().amax(dim=1) / qmax, up=True)
    scale = torch.where(scale > 0, scale, 1.0)
    return torch.clamp(torch.round(w / _channel_view(scale, w)), -qmax, qmax), scale


def quantize_weight(w: Tensor, bits: int) -> tuple[Tensor, Tensor | None]:
    """The dequantized weight and its per-channel scale (``None`` for fp16 and float)."""
    if bits == FLOAT_BITS:
        return w, None
    if bits == FP16_BITS:
        return w.to(torch.float16).to(w.dtype), None
    codes, scale = _codes(w, bits)
    return codes * _channel_view(scale, w), scale


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, quantize: Callable[[Tensor], Tensor]) -> Tensor:
        return quantize(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def _straight_through(x: Tensor, quantize: Callable[[Tensor], Tensor]) -> Tensor:
    """Exactly ``quantize(x)`` (which the packer must reproduce) in the forward pass, identity
    gradient to ``x`` in the backward pass, as one autograd node. Written with tensors,
    ``q.detach() + (x - x.detach())``, it took two more elementwise passes forward and two
    more autograd nodes backward in every training step (docs/BENCHMARKS.md)."""
    out: Tensor = _StraightThrough.apply(x, quantize)
    return out


class WeightFakeQuant(nn.Module):
    """Parametrization: per-channel fake quantization of a weight, straight-through gradient."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        check_bits(bits, "bits")
        self.bits = bits

    def forward(self, w: Tensor) -> Tensor:
        if self.bits == FLOAT_BITS:
            return w
        return _straight_through(w, self._dequantized)

    def _dequantized(self, w: Tensor) -> Tensor:
        return quantize_weight(w, self.bits)[0]

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class BiasFakeFp16(nn.Module):
    """Parametrization of a quantized layer's bias: fp16 values, straight-through gradient."""

    def forward(self, b: Tensor) -> Tensor:
        return _straight_through(b, fp16_grid)


class ActFakeQuant(nn.Module):
    """Per-tensor fake quantization of a layer's input, applied by a forward pre-hook.

    ``scale_src`` is a running max-abs (EMA, momentum 0.1) initialised from the first batch
    seen, in train or eval; training updates it, eval uses it frozen. ``signed`` becomes True
    once a negative input is seen in training (or in the first batch): until then the unsigned
    range ``0..2**b - 1`` doubles the resolution of non-negative inputs such as ReLU outputs.
    The buffers live in ``state_dict``; the updates avoid host synchronisation.
    """

    scale_src: Tensor
    signed: Tensor
    initialized: Tensor

    def __init__(self, bits: int, momentum: float = 0.1) -> None:
        super().__init__()
        _check_act_bits(bits, "act_bits")
        if bits == FLOAT_BITS:
            raise ValueError("32-bit activations need no ActFakeQuant")
        self.bits = bits
        self.momentum = momentum
        self.register_buffer("scale_src", torch.zeros(()))
        self.register_buffer("signed", torch.zeros((), dtype=torch.bool))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def _observe(self, x: Tensor) -> None:
        max_abs = x.abs().amax().to(self.scale_src.dtype)
        negative = (x < 0).any()
        if self.training:
            ema = self.scale_src * (1.0 - self.momentum) + max_abs * self.momentum
            signed = self.signed | negative
        else:
            ema, signed = self.scale_src, self.signed
        self.scale_src.copy_(torch.where(self.initialized, ema, max_abs))
        self.signed.copy_(torch.where(self.initialized, signed, negative))
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        if self.bits == FP16_BITS:
            return _straight_through(x, lambda t: t.to(torch.float16).to(t.dtype))
        self._observe(x)
        qmax_signed = 2 ** (self.bits - 1) - 1
        qmax_unsigned = 2**self.bits - 1
        hi = torch.where(self.signed, qmax_signed, qmax_unsigned).to(x.dtype)
        lo = torch.where(self.signed, -hi, torch.zeros_like(hi))
        scale = self.scale_src.to(x.dtype).clamp(min=1e-12) / hi
        return _straight_through(
            x, lambda t: torch.minimum(torch.maximum(torch.round(t / scale), lo), hi) * scale
        )

    def pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Forward pre-hook of the owning layer: quantize its first positional input.

        Registered as a bound method, so ``copy.deepcopy`` of the model rebinds it to the
        copied ``ActFakeQuant`` (the layer's ``input_quant`` submodule).
        """
        return (self(args[0]), *args[1:])

    def extra_repr(self) -> str:
        return f"bits={self.bits}, momentum={self.momentum}"


def weight_quantizer(layer: nn.Module) -> WeightFakeQuant | None:
    """The layer's weight quantizer parametrization, if ``quantize_`` registered one."""
    return next((m for m in layer.modules() if isinstance(m, WeightFakeQuant)), None)


def quantize_(
    model: nn.Module,
    bits: Mapping[str, int],
    act_bits: Mapping[str, int | None] | None = None,
) -> None:
    """Fake-quantize weights (and optionally inputs) of the named layers, in place.

    Call after ``prune_`` so the mask parametrization comes first and the scales are computed
    from the masked weights. 32 bits (or ``None`` for activations) registers nothing; any
    other width also rounds the layer's bias to float16 values (``BiasFakeFp16``).
    """
    for name, b in bits.items():
        field = f"bits/{name}"
        layer = compressible_layer(model, name, field)
        check_bits(b, field)
        if weight_quantizer(layer) is not None:
            raise ConfigError(field, "layer is already quantized; quantize once")
        if b != FLOAT_BITS:
            # unsafe: both keep shape and dtype by construction; torch's check would quantize
            # the weight once more here (prune._register_mask says the same)
            parametrize.register_parametrization(layer, "weight", WeightFakeQuant(b), unsafe=True)
            if isinstance(getattr(layer, "bias", None), Tensor):
                parametrize.register_parametrization(layer, "bias", BiasFakeFp16(), unsafe=True)
    for name, ab in (act_bits or {}).items():
        field = f"act_bits/{name}"
        layer = compressible_layer(model, name, field)
        if ab is None:
            continue
        _check_act_bits(ab, field)
        if hasattr(layer, "input_quant"):
            raise ConfigError(field, "layer input is already quantized; quantize once")
        if ab == FLOAT_BITS:
            continue
        # the device of the weight's storage: reading ``layer.weight`` would run its chain
        quant = ActFakeQuant(ab).to(next(layer.parameters()).device)
        layer.add_module("input_quant", quant)
        layer.register_forward_pre_hook(quant.pre_hook)
