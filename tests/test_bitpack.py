"""Bit packing and position encodings: round trips, known bytes, edge cases, agreement with the
size formula, and speed on a LeNet-5-sized layer."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from autocompress.bitpack import (
    decode_slots,
    encode_slots,
    index_size,
    pack_bits,
    packed_size,
    parse_encoding,
    unpack_bits,
)
from autocompress.size import cheapest_encoding

ENCODINGS = ["dense", "bitmap", *(f"delta{g}" for g in range(1, 17))]


@settings(max_examples=200, deadline=None)
@given(bits=st.integers(1, 16), data=st.data())
def test_pack_round_trip_at_every_width(bits: int, data: st.DataObject) -> None:
    values = data.draw(arrays(np.int64, st.integers(0, 300), elements=st.integers(0, 2**bits - 1)))
    packed = pack_bits(values, bits)
    assert len(packed) == packed_size(values.size, bits) == math.ceil(values.size * bits / 8)
    assert np.array_equal(unpack_bits(packed, values.size, bits), values)


def test_known_bytes_msb_first() -> None:
    assert pack_bits(np.array([1, 0, 1]), 1) == b"\xa0"  # 101 then zero padding
    assert pack_bits(np.array([5, 3]), 3) == b"\xac"  # 101 011 00
    assert pack_bits(np.array([0xAB]), 8) == b"\xab"
    assert pack_bits(np.array([0x1234]), 16) == b"\x12\x34"
    assert pack_bits(np.array([], dtype=np.int64), 7) == b""


def test_bad_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"bit width must be 1\.\.16"):
        pack_bits(np.array([0]), 0)
    with pytest.raises(ValueError, match=r"bit width must be 1\.\.16"):
        pack_bits(np.array([0]), 17)
    with pytest.raises(ValueError, match=r"values must be in 0\.\.7"):
        pack_bits(np.array([8]), 3)
    with pytest.raises(ValueError, match=r"values must be in 0\.\.7"):
        pack_bits(np.array([-1]), 3)
    with pytest.raises(ValueError, match="expected 2 bytes for 5 3-bit fields, got 1"):
        unpack_bits(b"\x00", 5, 3)
    with pytest.raises(ValueError, match="unknown position encoding 'delta17'"):
        parse_encoding("delta17")
    with pytest.raises(ValueError, match="unknown position encoding 'sparse'"):
        parse_encoding("sparse")


def _check_slots(nonzero: np.ndarray, encoding: str) -> np.ndarray:
    slots, index = encode_slots(nonzero, encoding)
    assert len(index) == index_size(encoding, nonzero.size, slots.size)
    assert np.array_equal(decode_slots(index, encoding, nonzero.size, slots.size), slots)
    assert np.all(np.diff(slots) > 0)
    # every nonzero is stored; anything else stored is a filler
    assert set(np.flatnonzero(nonzero)) <= set(slots.tolist())
    return slots


@settings(max_examples=100, deadline=None)
@given(nonzero=arrays(bool, st.integers(0, 400)), encoding=st.sampled_from(ENCODINGS))
def test_slots_round_trip(nonzero: np.ndarray, encoding: str) -> None:
    _check_slots(nonzero, encoding)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(
    "nonzero",
    [
        np.zeros(50, bool),  # all zero: nothing stored but for dense
        np.ones(50, bool),  # all kept
        np.ones(1, bool),  # one element
        np.zeros(1, bool),
        np.zeros(0, bool),  # empty
        np.isin(np.arange(1000), [0, 999]),  # a gap of 999 needs fillers below g=10
    ],
    ids=["all-zero", "all-kept", "one-kept", "one-zero", "empty", "long-gap"],
)
def test_slots_edge_cases(nonzero: np.ndarray, encoding: str) -> None:
    slots = _check_slots(nonzero, encoding)
    kind, g = parse_encoding(encoding)
    if kind == "dense":
        assert slots.size == nonzero.size
    elif kind == "bitmap":
        assert slots.size == nonzero.sum()
    else:
        positions = np.flatnonzero(nonzero)
        gaps = np.diff(positions, prepend=-1)
        assert slots.size == int(np.sum(np.ceil(gaps / (2**g - 1))))


def test_fillers_advance_the_longest_gap() -> None:
    nonzero = np.isin(np.arange(20), [2, 19])
    slots, index = encode_slots(nonzero, "delta2")  # fields hold gaps 1..3
    # gap 3 to position 2, then 17 to position 19 = fillers of 3 (5, 8, 11, 14, 17) and 2
    assert slots.tolist() == [2, 5, 8, 11, 14, 17, 19]
    assert unpack_bits(index, 7, 2).tolist() == [3, 3, 3, 3, 3, 3, 2]


@settings(max_examples=60, deadline=None)
@given(nonzero=arrays(bool, st.integers(1, 2000)), bits=st.sampled_from([1, 2, 4, 7, 16, 32]))
def test_the_cheapest_encoding_costs_what_the_formula_says(nonzero: np.ndarray, bits: int) -> None:
    """The bytes written are the formula's bits rounded up to whole bytes, field by field."""
    encoding, index_bits, value_bits = cheapest_encoding(nonzero, bits)
    slots, index = encode_slots(nonzero, encoding)
    assert len(index) == math.ceil(index_bits / 8)
    assert slots.size * bits == value_bits


def test_corrupt_indices_are_value_errors() -> None:
    with pytest.raises(ValueError, match="zero gap"):
        decode_slots(pack_bits(np.array([1, 0, 2]), 4), "delta4", 10, 3)
    with pytest.raises(ValueError, match="reaches position 10 of 10"):
        decode_slots(pack_bits(np.array([5, 6]), 4), "delta4", 10, 2)
    with pytest.raises(ValueError, match="bitmap marks 2 stored values, expected 3"):
        decode_slots(pack_bits(np.array([1, 0, 1, 0]), 1), "bitmap", 4, 3)
    with pytest.raises(ValueError, match="dense encoding stores all 4 values, not 3"):
        decode_slots(b"", "dense", 4, 3)


def test_packing_a_lenet5_fc1_is_fast() -> None:
    """400,000 4-bit codes and a 5% bitmap: a few ms each; the budget is well under 200 ms."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 15, 400_000)
    nonzero = rng.random(400_000) < 0.05
    start = time.perf_counter()
    packed = pack_bits(codes, 4)
    slots, index = encode_slots(nonzero, "delta5")
    elapsed = time.perf_counter() - start
    assert np.array_equal(unpack_bits(packed, codes.size, 4), codes)
    assert np.array_equal(decode_slots(index, "delta5", nonzero.size, slots.size), slots)
    assert elapsed < 0.2
