"""The size formula: a model worked by hand, the encoding choice, and the float32 baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from autocompress.errors import ConfigError
from autocompress.prune import prune_
from autocompress.quantize import quantize_
from autocompress.size import (
    HEADER_BITS,
    cheapest_encoding,
    float32_bytes,
    model_size,
    weight_sparsity,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.seq = nn.Conv1d(8, 6, 1)
        self.fc = nn.Linear(6, 4)
        self.register_buffer("offset", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = x + self.depthwise(x)
        x = self.seq(x.flatten(2)).mean(2)
        return self.fc(x) + self.offset


def test_hand_computed_linear() -> None:
    model = nn.Sequential(nn.Linear(8, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0, 0], model[0].weight[0, 7] = 0.5, -0.3
        model[0].weight[2, 0], model[0].weight[2, 7] = 0.01, 1.0
    quantize_(model, {"0": 4}, {"0": 8})
    size = model_size(model, {"0": 4})
    (layer,) = size.layers
    # 4 bits: qmax 7. Row 0: scale 0.5/7 rounded up to 5/64, codes [6.4 -> 6, .., -3.84 -> -4].
    # Row 1: all zero. Row 2: scale 1/7 -> 5/32, 0.01 / (5/32) = 0.064 rounds to 0 (a zero the
    # pruning did not make), 1 -> 6.
    # Nonzeros at flat positions 0, 7, 23 of n = 24: k = 3, gaps 1, 7, 16.
    assert (layer.numel, layer.nonzero, layer.bits) == (24, 3, 4)
    # dense 24*4 = 96; bitmap 24 + 3*4 = 36; delta g: E entries cost E*(g + 4):
    # g=3 (max gap 7): 1+1+3 = 5 entries -> 35; g=4 (15): 1+1+2 = 4 -> 32; g=5 (31): 3 -> 27;
    # g=6: 3 -> 30. Cheapest: delta5, 3*5 = 15 index bits and 3*4 = 12 value bits.
    assert (layer.index_kind, layer.index_bits, layer.value_bits) == ("delta5", 15, 12)
    assert layer.scale_bits == 2 * 8  # a one-byte scale per live channel: row 1 has none
    assert layer.bias_bits == 3 * 16  # a quantized layer's bias is float16 too
    assert layer.act_bits == 32  # one float32 activation scale
    assert layer.header_bits == 64
    assert layer.total_bits == 15 + 12 + 16 + 48 + 32 + 64  # 187
    # BatchNorm1d(3): weight, bias, running_mean, running_var (not num_batches_tracked)
    assert size.other_bits == 4 * 3 * 32  # 384
    assert size.total_bits == 187 + 384  # 571
    assert size.total_bytes == 72  # ceil(571 / 8)


@pytest.mark.parametrize(
    ("pattern", "bits", "expected"),
    [
        # all zero: no entries at all, delta costs nothing (the header holds k = 0)
        ([0] * 10, 8, ("delta1", 0, 0)),
        # all kept: dense 80 < bitmap 10 + 80 < delta1 10 * (1 + 8)
        ([1] * 10, 8, ("dense", 0, 80)),
        # one kept at position 0 of 100: one delta1 entry, 1 + 8 bits
        ([1] + [0] * 99, 8, ("delta1", 1, 8)),
        # one kept at position 99: gap 100 fits g=7 (max 127) in one entry: 7 + 8 = 15 bits;
        # g=6 needs a filler (2 * 14 = 28), bitmap 100 + 8
        ([0] * 99 + [1], 8, ("delta7", 7, 8)),
        # half kept, spread: bitmap 8 + 4*4 = 24 < dense 32 < delta1 8 * 5 = 40
        ([1, 0, 1, 0, 0, 1, 1, 0], 4, ("bitmap", 8, 16)),
    ],
)
def test_encoding_edge_cases(pattern: list[int], bits: int, expected: tuple[str, int, int]) -> None:
    assert cheapest_encoding(np.array(pattern, dtype=bool), bits) == expected


def test_long_gap_needs_fillers() -> None:
    # ten nonzeros 8 apart (positions 7, 15, ..., 79), then one 40 further (119); n = 120
    pattern = np.zeros(120, dtype=bool)
    pattern[7:80:8] = True
    pattern[119] = True
    # 4-bit values. g=3 (max 7): gaps of 8 need a filler each: (20 + 6) * 7 = 182.
    # g=4 (max 15): 10 entries + ceil(40/15) = 3 for the long gap (2 fillers) = 13 -> 13 * 8 = 104.
    # g=5: 10 + 2 = 12 -> 108; g=6: 11 -> 110; bitmap 120 + 11*4 = 164; dense 480.
    assert cheapest_encoding(pattern, 4) == ("delta4", 13 * 4, 13 * 4)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ([1, 1, 1, 1], ("dense", 0, 4)),
        # dense would be 4 bits but cannot store the zero: delta1 3 * (1 + 1) = 6 < bitmap 4 + 3
        ([1, 1, 1, 0], ("delta1", 3, 3)),
        # delta1 and delta2 would need fillers (a stored zero): delta3 3 + 1 < bitmap 4 + 1
        ([0, 0, 0, 1], ("delta3", 3, 1)),
    ],
)
def test_one_bit_never_stores_a_zero(pattern: list[int], expected: tuple[str, int, int]) -> None:
    assert cheapest_encoding(np.array(pattern, dtype=bool), 1) == expected


def _brute_force(pattern: np.ndarray, bits: int) -> int:
    """Walk the pattern, emitting filler entries as a decoder would read them."""
    n, k = pattern.size, int(pattern.sum())
    best = n + k * bits  # bitmap
    if bits != 1 or k == n:
        best = min(best, n * bits)
    for g in range(1, 17):
        limit, entries, fillers, last = 2**g - 1, 0, 0, -1
        for pos in np.flatnonzero(pattern):
            gap = int(pos) - last
            while gap > limit:
                entries, fillers, gap = entries + 1, fillers + 1, gap - limit
            entries, last = entries + 1, int(pos)
        if bits != 1 or fillers == 0:
            best = min(best, entries * (g + bits))
    return best


@settings(max_examples=200, deadline=None)
@given(
    pattern=arrays(np.bool_, st.integers(0, 300), elements=st.booleans()),
    bits=st.sampled_from([1, 2, 4, 8, 15, 16, 32]),
    density=st.floats(0.0, 1.0),
)
def test_encoding_is_the_cheapest(pattern: np.ndarray, bits: int, density: float) -> None:
    rng = np.random.default_rng(pattern.size)
    sparse = pattern & (rng.random(pattern.size) < density)
    kind, index_bits, value_bits = cheapest_encoding(sparse, bits)
    assert index_bits + value_bits == _brute_force(sparse, bits)
    assert kind == "dense" or kind == "bitmap" or kind.startswith("delta")


def _float_elements(model: nn.Module) -> int:
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for n, b in model.named_buffers() if "num_batches_tracked" not in n)
    return params + buffers


def test_float32_bytes_of_plain_model() -> None:
    model = Net()
    assert float32_bytes(model) == 4 * _float_elements(model)


def test_float32_model_costs_float32_bytes_plus_headers() -> None:
    model = Net()
    size = model_size(model, {})
    assert [layer.index_kind for layer in size.layers] == ["dense"] * 4
    assert size.total_bytes == float32_bytes(model) + 4 * HEADER_BITS // 8
    same = model_size(model, dict.fromkeys(("conv", "depthwise", "seq", "fc"), 32))
    assert same == size


def test_compressed_model_counts_nothing_twice() -> None:
    torch.manual_seed(0)
    plain = Net()
    model = Net()
    model.load_state_dict(plain.state_dict())
    bits = {"conv": 4, "depthwise": 2, "seq": 16, "fc": 1}
    prune_(model, {"conv": 0.5, "depthwise": 0.3, "fc": 0.75})
    quantize_(model, bits, {"seq": 8, "fc": 4})
    # masks, originals and activation statistics are not part of the float model
    assert float32_bytes(model) == float32_bytes(plain)
    size = model_size(model, bits)
    assert size.other_bits == model_size(plain, bits).other_bits
    assert size.other_bits == 32 * (4 * 8 + 4)  # BatchNorm2d(8) params and stats, offset(4)
    by_name = {layer.name: layer for layer in size.layers}
    assert by_name["conv"].nonzero <= 8 * 3 * 3 * 3 - round(0.5 * 216)
    assert by_name["fc"].nonzero == 24 - 18
    assert (by_name["seq"].scale_bits, by_name["seq"].act_bits) == (0, 32)
    live_rows = int(model.fc.weight.ne(0).any(dim=1).sum())  # 1 bit: the kept weights
    assert by_name["fc"].scale_bits == live_rows * 8  # one byte per live channel
    assert by_name["fc"].bias_bits == live_rows * 16  # prune_ zeroed the empty rows' bias
    assert by_name["depthwise"].bias_bits == 0
    assert size.total_bytes == math.ceil(size.total_bits / 8)
    assert size.total_bytes < float32_bytes(plain)


def test_sparsity_counts_the_zeros_the_formula_counts() -> None:
    """Masked and rounded zeros alike: 2-bit codes round small kept weights to zero."""
    torch.manual_seed(2)
    model = Net()
    bits = {"conv": 2, "depthwise": 2, "seq": 8, "fc": 4}
    prune_(model, {"conv": 0.5, "fc": 0.25})
    quantize_(model, bits)
    layers = model_size(model, bits).layers
    zeros = sum(layer.numel - layer.nonzero for layer in layers)
    assert zeros > round(0.5 * 216) + round(0.25 * 24)  # rounding added some
    assert weight_sparsity(model) == pytest.approx(zeros / sum(layer.numel for layer in layers))
    assert weight_sparsity(Net()) == 0.0


def test_plain_model_with_bits_matches_quantized_model() -> None:
    """Counting quantized nonzeros of an unquantized model gives the size the plan will have."""
    torch.manual_seed(1)
    plain = Net()
    bits = {"conv": 2, "depthwise": 3, "seq": 8, "fc": 1}
    model = Net()
    model.load_state_dict(plain.state_dict())
    quantize_(model, bits)
    assert model_size(model, bits) == model_size(plain, bits)


def test_bad_bits_mapping_is_config_error() -> None:
    model = Net()
    with pytest.raises(ConfigError) as info:
        model_size(model, {"bn": 4})
    assert info.value.field == "bits/bn"
    with pytest.raises(ConfigError, match=r"^bits/fc: bits must be"):
        model_size(model, {"fc": 0})
    quantize_(model, {"fc": 4})
    with pytest.raises(ConfigError, match="quantized to 4 bits"):
        model_size(model, {"fc": 8})
    with pytest.raises(ConfigError, match="quantized to 4 bits"):
        model_size(model, {})
