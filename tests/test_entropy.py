"""The adaptive entropy coder: exact round trips, rates near the entropy, bad bytes refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autocompress import entropy
from autocompress.entropy import FLOAT16, SCALE, Categorical, Gaps


def _round_trip(sequences: list[tuple[entropy.Model, np.ndarray]]) -> bytes:
    data = entropy.encode(sequences)
    decoded = entropy.decode(data, [(model, len(values)) for model, values in sequences])
    for (_, values), back in zip(sequences, decoded, strict=True):
        np.testing.assert_array_equal(back, values)
    return data


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    code_bits=st.integers(1, 8),
    gap_bits=st.integers(2, 16),
    count=st.integers(0, 9000),  # past the largest block, 4096 symbols
    channels=st.integers(0, 300),
)
def test_every_kind_of_sequence_round_trips(
    seed: int, code_bits: int, gap_bits: int, count: int, channels: int
) -> None:
    """A layer's codes, gaps, one-byte scales and float16 biases in one coded blob, as the
    file holds them."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << code_bits, count)
    gaps = rng.integers(1, 1 << gap_bits, count)
    gaps[rng.random(count) < 0.5] = 1  # every bit length, the shortest often
    scales = rng.integers(0, 248, channels)
    biases = rng.integers(0, 1 << 16, channels)
    _round_trip(
        [
            (Categorical(1 << code_bits), codes),
            (Gaps(gap_bits), gaps),
            (SCALE, scales),
            (FLOAT16, biases),
        ]
    )


def test_blocks_cover_the_sequence_and_double_up_to_the_cap() -> None:
    for count in (0, 1, 16, 17, 100, 4096, 20_000):
        blocks = entropy._blocks(count)
        starts = [start for start, _ in blocks]
        assert [start for start, _ in blocks[1:]] == [stop for _, stop in blocks[:-1]]
        assert (blocks[-1][1] if blocks else 0) == count and starts[:1] in ([], [0])
    assert [stop - start for start, stop in entropy._blocks(300)] == [16, 16, 32, 64, 128, 44]
    assert {stop - start for start, stop in entropy._blocks(20_000)[10:-1]} == {4096}


def test_a_skewed_sequence_codes_near_its_entropy() -> None:
    """20,000 3-bit codes from a peaked distribution (2.46 bits of entropy per code against 3
    packed): within 1% of the entropy (0.4% measured), the price of learning it."""
    probabilities = np.array([0.02, 0.05, 0.13, 0.3, 0.3, 0.13, 0.05, 0.02])
    codes = np.random.default_rng(0).choice(8, size=20_000, p=probabilities)
    entropy_bytes = -len(codes) * float((probabilities * np.log2(probabilities)).sum()) / 8
    coded = len(_round_trip([(Categorical(8), codes)]))
    assert entropy_bytes < coded < 1.01 * entropy_bytes
    assert coded < 0.83 * math.ceil(3 * len(codes) / 8)


def test_geometric_gaps_code_below_their_fixed_width() -> None:
    """Gaps between randomly kept positions (1% of 100,000) are geometric: the learnt bit
    length plus the low bits takes about 8.5 bits per gap, against 12 in a fixed field."""
    kept = np.flatnonzero(np.random.default_rng(0).random(100_000) < 0.01)
    gaps = np.diff(kept, prepend=-1)
    assert gaps.max() < 4096
    coded = len(_round_trip([(Gaps(12), gaps)]))
    assert coded < 0.75 * math.ceil(12 * len(gaps) / 8)


def test_symbols_that_code_to_no_bytes_decode() -> None:
    """One likely symbol each leaves ANS's state where it began: no bytes, which must read back
    (hypothesis found it: the decoder refused an empty blob, so such a layer's file was
    written and could not be loaded)."""
    assert _round_trip([(Categorical(2), np.array([0])), (Gaps(2), np.array([1]))]) == b""


def test_bad_bytes_are_a_value_error() -> None:
    codes = np.arange(100) % 4
    data = entropy.encode([(Categorical(4), codes)])
    spec = [(Categorical(4), 100)]
    with pytest.raises(ValueError, match="not a multiple of 4"):
        entropy.decode(data[:-1], spec)
    with pytest.raises(ValueError, match="holds more than the layer's sequences"):
        entropy.decode(data + data, spec)
    with pytest.raises(ValueError, match="holds more than the layer's sequences"):
        entropy.decode(data, [(Categorical(4), 50)])
    assert entropy.decode(b"", [(Categorical(4), 0)])[0].size == 0
