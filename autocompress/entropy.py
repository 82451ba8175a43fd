"""Adaptive entropy coding of a layer's sequences: the Huffman stage of Deep Compression.

LZMA2 over the whole payload (``artifact``) finds repeated byte strings, but a layer's
bit-packed 3-bit codes and 12-bit gaps cross byte boundaries and its float16 scales have
random low bits, so its literal coder gains little: 7% of a 446x LeNet-5 file's codes, gaps,
scales and biases. Here each sequence has its own adaptive model, learnt from the symbols
already coded, so the file stores no code table (a table of 256 code lengths would cost more
than it saves on a layer of a few hundred weights):

- ``Categorical(n)``: symbols ``0..n-1`` (a layer's codes; gaps of up to 8 bits), with
  probabilities from the counts seen so far plus 1/2 (the Krichevsky-Trofimov estimator),
  refreshed at blocks that double in length up to ``_MAX_BLOCK`` symbols;
- ``Gaps(bits)``: values ``1..2**bits - 1`` (wider gaps): the bit length like a categorical
  symbol, the bits below the leading one uniformly (Elias gamma with a learnt length);
- ``Split(bits, low)``: floating-point bit patterns, the top ``bits - low`` bits (sign and
  exponent) like a categorical symbol, the ``low`` mantissa bits uniformly: ``FLOAT16`` for
  biases (and older files' scales), ``SCALE`` for one-byte scales (5 exponent, 3 mantissa).

The coder is ``constriction``'s ANS (a Rust extension, numpy in and out, maintained by the
Bamler lab at Tuebingen): exact, and 235,200 4-bit codes (LeNet-300-100's fc1 unpruned) take
3 ms to encode and 6 ms to decode, where a Python arithmetic coder would take seconds inside
every trial. The bytes depend on its fixed-point model construction, so the dependency is
pinned to a minor release and a stored file in tests/data checks both directions. This module
is the only one that imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import constriction
import numpy as np

_FIRST_BLOCK = 16
_MAX_BLOCK = 4096
_KT_PRIOR = 0.5


@dataclass(frozen=True)
class Categorical:
    symbols: int


@dataclass(frozen=True)
class Gaps:
    bits: int


@dataclass(frozen=True)
class Split:
    bits: int
    low: int


FLOAT16 = Split(16, 10)
SCALE = Split(8, 3)
Model = Categorical | Gaps | Split
_Coder = Any  # constriction.stream.stack.AnsCoder: the extension ships no type stubs


def encode(sequences: Sequence[tuple[Model, np.ndarray]]) -> bytes:
    """The ANS words (little-endian uint32) of every sequence; ``decode`` with the same models
    and lengths gives them back in order."""
    coder = constriction.stream.stack.AnsCoder()
    # ANS is a stack: the last sequence goes in first so that decoding starts with the first
    for model, values in reversed(sequences):
        values = np.asarray(values, dtype=np.int64)
        if isinstance(model, Categorical):
            _encode_adaptive(coder, values, model.symbols)
        elif isinstance(model, Gaps):
            _encode_leading_one(coder, values, model.bits)
        else:
            _encode_uniform(coder, values & ((1 << model.low) - 1), model.low)
            _encode_adaptive(coder, values >> model.low, 1 << (model.bits - model.low))
    return coder.get_compressed().astype("<u4").tobytes()


def decode(data: bytes, sequences: Sequence[tuple[Model, int]]) -> list[np.ndarray]:
    """``encode``'s sequences (int64 arrays) from its bytes, given each one's model and length;
    ValueError if the bytes are not whole words or hold more. No bytes at all are a valid
    coding (a few likely symbols leave ANS's state where it began); a truncated blob is the
    file's CRC's to catch, as ANS decodes any words."""
    if len(data) % 4:
        raise ValueError(f"coded length {len(data)} is not a multiple of 4")
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    out = []
    for model, count in sequences:
        if isinstance(model, Categorical):
            out.append(_decode_adaptive(coder, count, model.symbols))
        elif isinstance(model, Gaps):
            out.append(_decode_leading_one(coder, count, model.bits))
        else:
            high = _decode_adaptive(coder, count, 1 << (model.bits - model.low))
            out.append(high << model.low | _decode_uniform(coder, count, model.low))
    if not coder.is_empty():
        raise ValueError("coded data holds more than the layer's sequences")
    return out


def _blocks(count: int) -> list[tuple[int, int]]:
    """Half-open ranges of 16, 16, 32, 64, ... 4096, 4096, ... symbols covering ``count``."""
    ranges, start = [], 0
    while start < count:
        size = min(max(start, _FIRST_BLOCK), _MAX_BLOCK)
        ranges.append((start, min(start + size, count)))
        start += size
    return ranges


def _encode_adaptive(coder: _Coder, symbols: np.ndarray, alphabet: int) -> None:
    """Each block under the counts of every earlier symbol plus the prior (the decoder builds
    the same from what it has decoded)."""
    models, counts = [], np.zeros(alphabet, dtype=np.int64)
    for start, stop in _blocks(len(symbols)):
        models.append((start, stop, counts + _KT_PRIOR))
        counts = counts + np.bincount(symbols[start:stop], minlength=alphabet)
    for start, stop, probabilities in reversed(models):
        model = constriction.stream.model.Categorical(probabilities, perfect=False)
        coder.encode_reverse(symbols[start:stop].astype(np.int32), model)


def _decode_adaptive(coder: _Coder, count: int, alphabet: int) -> np.ndarray:
    symbols = np.zeros(count, dtype=np.int64)
    counts = np.zeros(alphabet, dtype=np.int64)
    for start, stop in _blocks(count):
        model = constriction.stream.model.Categorical(counts + _KT_PRIOR, perfect=False)
        symbols[start:stop] = coder.decode(model, stop - start)
        counts = counts + np.bincount(symbols[start:stop], minlength=alphabet)
    return symbols


def _encode_uniform(coder: _Coder, values: np.ndarray, bits: int) -> None:
    if len(values):
        model = constriction.stream.model.Uniform(1 << bits)
        coder.encode_reverse(values.astype(np.int32), model)


def _decode_uniform(coder: _Coder, count: int, bits: int) -> np.ndarray:
    model = constriction.stream.model.Uniform(1 << bits)
    return coder.decode(model, count).astype(np.int64) if count else np.zeros(0, np.int64)


def _encode_leading_one(coder: _Coder, values: np.ndarray, bits: int) -> None:
    lengths = np.frexp(values.astype(np.float64))[1].astype(np.int64)  # bit_length, exactly
    wide = lengths > 1
    if wide.any():
        sizes = (1 << (lengths[wide] - 1)).astype(np.int32)
        coder.encode_reverse((values[wide] - sizes).astype(np.int32), _uniform_family(), sizes)
    _encode_adaptive(coder, lengths - 1, bits)


def _decode_leading_one(coder: _Coder, count: int, bits: int) -> np.ndarray:
    lengths = _decode_adaptive(coder, count, bits) + 1
    values = np.ones(count, dtype=np.int64)
    wide = lengths > 1
    if wide.any():
        sizes = (1 << (lengths[wide] - 1)).astype(np.int32)
        values[wide] = sizes + coder.decode(_uniform_family(), sizes)
    return values


def _uniform_family() -> Any:
    """Uniform models whose sizes come with the symbols."""
    return constriction.stream.model.Uniform()
