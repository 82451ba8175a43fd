"""Fake quantization: levels, rounding, exact zeros, gradients and whole-model behaviour."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn
from torch.nn.utils import parametrize

from autocompress.errors import ConfigError
from autocompress.prune import prune_
from autocompress.quantize import (
    ActFakeQuant,
    WeightFakeQuant,
    check_bits,
    integer_codes,
    quantize_,
    quantize_weight,
    scale_fields,
    scale_grid,
    scales_from_fields,
    weight_quantizer,
)


class Net(nn.Module):
    """BatchNorm, a residual connection, grouped, depthwise, Conv1d and Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.seq = nn.Conv1d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv(x)))
        x = x + torch.relu(self.bn2(self.grouped(x)))
        x = self.depthwise(x)
        x = torch.relu(self.seq(x.flatten(2)))
        return self.fc(x.mean(2))


LAYERS = ("conv", "grouped", "depthwise", "seq", "fc")
PRUNE = {"conv": 0.3, "grouped": 0.5, "depthwise": 0.2, "seq": 0.6, "fc": 0.4}
BITS = {"conv": 8, "grouped": 4, "depthwise": 1, "seq": 16, "fc": 3}
ACT_BITS: dict[str, int | None] = {"grouped": 8, "depthwise": 4, "seq": 6, "fc": None}


def _compressed(seed: int) -> Net:
    torch.manual_seed(seed)
    model = Net()
    prune_(model, PRUNE)
    quantize_(model, BITS, ACT_BITS)
    return model


# --- check_bits -------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [*range(1, 17), 32])
def test_check_bits_accepts(bits: int) -> None:
    check_bits(bits, "bits/fc")


@pytest.mark.parametrize("bits", [0, -1, 17, 31, 33, 64])
def test_check_bits_rejects(bits: int) -> None:
    with pytest.raises(ConfigError) as info:
        check_bits(bits, "bits/fc")
    assert str(info.value) == "bits/fc: bits must be 1..15, 16 (fp16) or 32 (float)"
    assert info.value.field == "bits/fc"


# --- the weight quantizer ---------------------------------------------------------------------


def test_rounding_matches_hand_computation() -> None:
    w = torch.tensor([[0.9, 0.2, -0.6, 0.0], [-0.1, 0.05, 0.0, 0.04]])
    # Scales are rounded up to the one-byte grid, 3 mantissa bits: its step is 1/16 in
    # [0.5, 1), 1/32 in [0.25, 0.5), 1/128 in [1/16, 1/8), 1/256 in [1/32, 1/16).
    # b=2: qmax=1. Row 0: max|w| 0.9 -> 15/16; w/scale = [0.96, 0.21, -0.64, 0] -> [1, 0, -1, 0].
    # Row 1: 0.1 -> 13/128; w/scale = [-0.98, 0.49, 0, 0.39] -> [-1, 0, 0, 0].
    q, scale = quantize_weight(w, 2)
    assert scale is not None
    assert scale.tolist() == [15 / 16, 13 / 128]
    assert torch.equal(integer_codes(w, 2)[0], torch.tensor([[1, 0, -1, 0], [-1, 0, 0, 0]]))
    expected = torch.tensor([[1.0, 0, -1, 0], [-1, 0, 0, 0]]) * scale[:, None]
    assert torch.equal(q, expected)
    # b=3: qmax=3. Row 0: 0.9/3 -> 10/32; w/scale = [2.88, 0.64, -1.92, 0] -> [3, 1, -2, 0].
    # Row 1: 0.1/3 -> 9/256; w/scale = [-2.84, 1.42, 0, 1.14] -> [-3, 1, 0, 1].
    codes, scale = integer_codes(w, 3)
    assert torch.equal(codes, torch.tensor([[3, 1, -2, 0], [-3, 1, 0, 1]]))
    assert scale.tolist() == [10 / 32, 9 / 256]


def test_scales_are_one_byte_fields_and_quantized_biases_float16_values() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(30, 20)
    with torch.no_grad():
        layer.weight[0] = 0.0  # an all-zero channel: scale 1, codes 0
        layer.weight[1] = 1e-9  # below every level: codes 0
        layer.bias[2] = 1e6  # beyond float16: saturates at its largest value
    for bits in (1, 2, 5, 15):
        codes, scale = integer_codes(layer.weight, bits)
        fields = scale_fields(scale)
        assert fields is not None and torch.equal(scales_from_fields(fields), scale)
        assert scale[0] == 1 and not codes[:2].any()
    model = nn.Sequential(layer, nn.ReLU(), nn.Linear(20, 3))
    quantize_(model, {"0": 4, "2": 32})
    bias = model[0].bias
    assert torch.equal(bias.half().float(), bias)
    assert bias[2] == torch.finfo(torch.float16).max
    assert (bias - model[0].parametrizations.bias.original).abs().max() > 0  # it did round
    assert not parametrize.is_parametrized(model[2], "bias")  # a float layer keeps its bias
    model(torch.randn(4, 30)).sum().backward()  # straight through: the float bias learns
    grad = model[0].parametrizations.bias.original.grad
    assert grad is not None and grad.abs().sum() > 0


@settings(max_examples=150, deadline=None)
@given(
    bits=st.integers(1, 15),
    w=arrays(
        np.float32,
        st.tuples(st.integers(1, 5), st.integers(1, 40)),
        elements=st.one_of(st.just(0.0), st.floats(-10, 10, width=32)),
    ),
)
def test_levels_zeros_and_codes(bits: int, w: np.ndarray) -> None:
    weight = torch.from_numpy(w)
    q, scale = quantize_weight(weight, bits)
    codes, code_scale = integer_codes(weight, bits)
    assert scale is not None
    assert torch.equal(scale, code_scale)
    assert torch.all(scale > 0)
    # code * scale is the dequantized weight, bit for bit
    assert torch.equal(codes.to(weight.dtype) * scale[:, None], q)
    # zeros stay zero
    assert torch.all(q[weight == 0] == 0)
    for row, code_row in zip(q, codes, strict=True):
        if bits == 1:
            assert set(code_row.tolist()) <= {-1, 0, 1}
            assert len(row.unique()) <= 3
        else:
            qmax = 2 ** (bits - 1) - 1
            assert int(code_row.abs().max()) <= qmax
            assert len(row.unique()) <= 2**bits - 1


@pytest.mark.parametrize("bits", range(2, 9))
def test_spread_channel_uses_its_levels(bits: int) -> None:
    """Every level but those the rounded-up scale puts past the largest weight (at most 1/9
    of them: the scale grows by at most 1/8)."""
    torch.manual_seed(bits)
    w = torch.rand(3, 20000) * 2 - 1
    q, _ = quantize_weight(w, bits)
    qmax = 2 ** (bits - 1) - 1
    for row in q:
        assert 2 * math.floor(qmax * 8 / 9) + 1 <= len(row.unique()) <= 2**bits - 1


@settings(max_examples=100, deadline=None)
@given(value=st.floats(2**-14, 6e4))  # float16's normal range; below it the steps are coarser
def test_scale_grid_rounds_up_by_at_most_an_eighth(value: float) -> None:
    t = torch.tensor([value])
    value = float(t[0])  # as float32 sees it
    up, nearest = scale_grid(t, up=True), scale_grid(t, up=False)
    assert value <= float(up[0]) <= value * 1.125
    assert abs(float(nearest[0]) - value) <= value / 16
    for s in (up, nearest):
        fields = scale_fields(s)
        assert fields is not None and len(fields) == 1 and fields[0] < 248
        assert torch.equal(scales_from_fields(fields), s)
    assert scale_fields(torch.tensor([0.1])) is None  # a float16 value off the grid
    with pytest.raises(ValueError, match="scale field 248 is not a finite scale"):
        scales_from_fields(bytes([248]))


def test_per_channel_scales_and_all_zero_channel() -> None:
    w = torch.tensor([[1.0, -0.5], [0.0, 0.0], [0.01, 0.02]])
    q, scale = quantize_weight(w, 4)
    assert scale is not None
    assert scale.tolist() == [5 / 32, 1.0, 3 / 1024]  # 1/7, 0.02/7 rounded up
    assert torch.equal(q[1], torch.zeros(2))
    assert torch.equal(q[2, 1], w[2, 1].new_tensor(7) * scale[2])


def test_one_bit_is_sign_times_mean_abs_of_nonzeros() -> None:
    w = torch.tensor([[0.5, 0.0, -1.5, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    q, scale = quantize_weight(w, 1)
    assert scale is not None
    # mean |w| over the 3 nonzeros of row 0: (0.5 + 1.5 + 1.0) / 3 = 1.0
    torch.testing.assert_close(scale[0], torch.tensor(1.0))
    assert torch.equal(q[0], torch.tensor([1.0, 0.0, -1.0, 0.0, 1.0]))
    assert torch.equal(q[1], torch.zeros(5))
    assert set(q[0].tolist()) == {-1.0, 0.0, 1.0}


def test_fp16_and_float() -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 9)
    q16, s16 = quantize_weight(w, 16)
    assert s16 is None
    assert torch.equal(q16, w.half().float())
    q32, s32 = quantize_weight(w, 32)
    assert s32 is None
    assert torch.equal(q32, w)


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 15, 16, 32])
def test_straight_through_gradient(bits: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(5, 7, requires_grad=True)
    out = WeightFakeQuant(bits)(w)
    assert torch.equal(out.detach(), quantize_weight(w.detach(), bits)[0])
    upstream = torch.randn(5, 7)
    out.backward(upstream)
    assert w.grad is not None
    assert torch.equal(w.grad, upstream)


# --- quantize_ on layers and models -----------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        nn.Linear(9, 5),
        nn.Conv1d(4, 6, 3),
        nn.Conv2d(6, 6, 3, groups=3),
        nn.Conv2d(6, 6, 3, groups=6),
    ],
    ids=["linear", "conv1d", "grouped", "depthwise"],
)
def test_quantize_after_prune_uses_masked_weights(layer: nn.Module) -> None:
    model = nn.Sequential(copy.deepcopy(layer))
    prune_(model, {"0": 0.5})
    masked = model[0].weight.detach().clone()
    quantize_(model, {"0": 4})
    codes, scale = integer_codes(masked, 4)
    assert torch.equal(
        model[0].weight, codes.float() * scale.reshape(-1, *[1] * (masked.dim() - 1))
    )
    assert torch.all(model[0].weight[masked == 0] == 0)
    assert isinstance(model[0].parametrizations.weight[1], WeightFakeQuant)


def test_bits_32_and_act_none_register_nothing() -> None:
    model = Net()
    quantize_(model, {"fc": 32}, {"fc": None, "seq": 32})
    assert not parametrize.is_parametrized(model.fc)
    assert not hasattr(model.fc, "input_quant")
    assert not hasattr(model.seq, "input_quant")
    assert not model.seq._forward_pre_hooks


def test_compressed_model_trains_copies_and_round_trips() -> None:
    model = _compressed(0)
    x, y = torch.randn(8, 3, 5, 5), torch.randint(0, 4, (8,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    for name in LAYERS:
        grad = getattr(model, name).parametrizations.weight.original.grad
        assert grad is not None and torch.any(grad != 0)
    opt.step()
    model(x)  # one more batch for the activation statistics

    clone = copy.deepcopy(model)
    torch.manual_seed(99)
    fresh = _compressed(1)
    fresh.load_state_dict(model.state_dict())
    for m in (model, clone, fresh):
        m.eval()
    reference = model(x)
    assert (clone(x) - reference).abs().max().item() == 0
    assert (fresh(x) - reference).abs().max().item() == 0
    # the weights are what the quantizer says, pruned zeros included
    for name, bits in BITS.items():
        layer = getattr(model, name)
        mask = layer.parametrizations.weight[0].mask
        assert torch.all(layer.weight[mask == 0] == 0)
        masked = layer.parametrizations.weight.original * mask
        assert torch.equal(layer.weight, quantize_weight(masked.detach(), bits)[0])


def test_deep_copied_hook_uses_the_copy_s_quantizer() -> None:
    model = _compressed(0)
    x = torch.randn(4, 3, 5, 5)
    model(x)
    clone = copy.deepcopy(model)
    assert clone.grouped.input_quant is not model.grouped.input_quant
    before = model.grouped.input_quant.scale_src.clone()
    clone.train()
    clone(10 * x)
    assert torch.equal(model.grouped.input_quant.scale_src, before)
    assert clone.grouped.input_quant.scale_src > before
    # and the copy's hook really quantizes: its inputs are on the quantizer's grid
    seen: list[torch.Tensor] = []
    clone.fc.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    clone.depthwise.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    clone.eval()
    clone(x)
    assert len(seen[0].unique()) <= 2**4  # depthwise input, 4-bit activations


@pytest.mark.parametrize("mapping", ["bits", "act"])
def test_unknown_layer_is_config_error(mapping: str) -> None:
    field = "bits/bn1" if mapping == "bits" else "act_bits/nope"
    with pytest.raises(ConfigError) as info:
        if mapping == "bits":
            quantize_(Net(), {"bn1": 4})
        else:
            quantize_(Net(), {}, {"nope": 8})
    assert info.value.field == field
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bits", [0, 1, 17, 31])
def test_bad_act_bits_is_config_error(bits: int) -> None:
    with pytest.raises(ConfigError) as info:
        quantize_(Net(), {}, {"fc": bits})
    assert str(info.value) == "act_bits/fc: activation bits must be 2..15, 16 (fp16) or 32 (float)"


def test_bad_weight_bits_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^bits/fc: bits must be"):
        quantize_(Net(), {"fc": 17})


def test_quantizing_twice_is_config_error() -> None:
    model = Net()
    quantize_(model, {"fc": 4}, {"fc": 8})
    assert weight_quantizer(model.fc) is not None
    with pytest.raises(ConfigError, match="already"):
        quantize_(model, {"fc": 4})
    with pytest.raises(ConfigError, match="already"):
        quantize_(model, {}, {"fc": 8})


# --- ActFakeQuant -----------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_unsigned_range_after_relu(bits: int) -> None:
    torch.manual_seed(0)
    quant = ActFakeQuant(bits)
    x = torch.relu(torch.rand(50000) * 4 - 1)
    out = quant(x)
    assert not bool(quant.signed)
    assert torch.equal(quant.scale_src, x.abs().max())
    assert out.min() == 0
    assert len(out.unique()) == 2**bits  # 0 .. 2^b - 1


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_signed_range(bits: int) -> None:
    torch.manual_seed(0)
    quant = ActFakeQuant(bits)
    out = quant(torch.rand(50000) * 4 - 2)
    assert bool(quant.signed)
    assert len(out.unique()) == 2**bits - 1
    assert out.abs().max() <= quant.scale_src * (1 + 1e-6)


def test_statistic_is_ema_in_training_and_frozen_in_eval() -> None:
    quant = ActFakeQuant(8)
    quant.train()
    quant(torch.tensor([0.5, 1.0]))
    assert quant.scale_src.item() == 1.0
    quant(torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(quant.scale_src, torch.tensor(0.9 * 1.0 + 0.1 * 2.0))
    assert not bool(quant.signed)
    quant(torch.tensor([-0.1]))
    assert bool(quant.signed)
    quant.eval()
    state = {k: v.clone() for k, v in quant.state_dict().items()}
    out = quant(torch.tensor([100.0, -100.0, 0.3]))
    for key, value in quant.state_dict().items():
        assert torch.equal(value, state[key])
    # the frozen range clips
    torch.testing.assert_close(out[0], quant.scale_src)


def test_first_batch_in_eval_initialises_then_freezes() -> None:
    quant = ActFakeQuant(4).eval()
    quant(torch.tensor([0.0, 3.0]))
    assert quant.scale_src.item() == 3.0
    assert not bool(quant.signed)
    quant(torch.tensor([-7.0, 9.0]))
    assert quant.scale_src.item() == 3.0
    assert not bool(quant.signed)


def test_act_straight_through_gradient_and_fp16() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    upstream = torch.randn(3, 4)
    ActFakeQuant(4)(x).backward(upstream)
    assert x.grad is not None
    assert torch.equal(x.grad, upstream)
    half = ActFakeQuant(16)
    assert torch.equal(half(x), x.detach().half().float())
