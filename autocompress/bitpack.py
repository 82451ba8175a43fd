"""Bit-level codecs of the compressed file: fixed-width bit packing and the position encodings.

Everything is vectorised with numpy (no Python loop per element): a LeNet-5 ``fc1`` has 400,000
weights and packing runs inside every trial. Bits are packed most significant first, so a field
of ``b`` bits reads left to right in a hex dump, and 8- and 16-bit fields are plain big-endian
bytes.

Position encodings, named as ``autocompress.size.cheapest_encoding`` names them so the file and
the size formula agree: ``dense`` stores every value and no index; ``bitmap`` stores one bit per
element (1 = stored) then the nonzero values; ``delta{g}`` stores Deep Compression's relative
index, each entry a ``g``-bit gap ``1..2**g - 1`` from the previous stored position (the first
from position -1). A gap too long for one field is bridged by filler entries that advance
``2**g - 1`` positions and store a zero value. In each encoding the stored values belong to
*slots*: the flat (row-major) positions that have a value in the file, in increasing order.
"""

from __future__ import annotations

import numpy as np

MAX_BITS = 16


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bit width must be 1..{MAX_BITS}, got {bits}")


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` fields of ``bits`` bits occupy (the last byte zero-padded)."""
    _check_bits(bits)
    return (count * bits + 7) // 8


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers below ``2**bits`` into ``bits`` bits each, MSB first."""
    _check_bits(bits)
    flat = np.asarray(values).reshape(-1)
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise ValueError(f"values must be in 0..{(1 << bits) - 1} to pack into {bits} bits")
    # Every value as 16 big-endian bits, keep the low `bits` columns, pack the rows end to end.
    as_bits = np.unpackbits(flat.astype(">u2").view(np.uint8)).reshape(-1, MAX_BITS)
    return np.packbits(as_bits[:, MAX_BITS - bits :]).tobytes()


def unpack_bits(data: bytes, count: int, bits: int) -> np.ndarray:
    """The ``count`` fields of ``pack_bits`` as an int64 array; the byte count must be exact."""
    expected = packed_size(count, bits)
    if len(data) != expected:
        raise ValueError(
            f"expected {expected} bytes for {count} {bits}-bit fields, got {len(data)}"
        )
    as_bits = np.zeros((count, MAX_BITS), dtype=np.uint8)
    as_bits[:, MAX_BITS - bits :] = np.unpackbits(
        np.frombuffer(data, dtype=np.uint8), count=count * bits
    ).reshape(count, bits)
    return np.packbits(as_bits, axis=1).view(">u2").reshape(-1).astype(np.int64)


def parse_encoding(encoding: str) -> tuple[str, int]:
    """``("dense", 0)``, ``("bitmap", 0)`` or ``("delta", g)``; ValueError for anything else."""
    if encoding in ("dense", "bitmap"):
        return encoding, 0
    digits = encoding.removeprefix("delta")
    if digits != encoding and digits.isdigit() and 1 <= int(digits) <= MAX_BITS:
        return "delta", int(digits)
    raise ValueError(f"unknown position encoding {encoding!r}")


def index_size(encoding: str, numel: int, stored: int) -> int:
    """Bytes of the packed index of a tensor of ``numel`` elements with ``stored`` slots."""
    kind, gap_bits = parse_encoding(encoding)
    if kind == "dense":
        return 0
    if kind == "bitmap":
        return packed_size(numel, 1)
    return packed_size(stored, gap_bits)


def encode_slots(nonzero: np.ndarray, encoding: str) -> tuple[np.ndarray, bytes]:
    """``(slots, index)`` of a flat boolean nonzero pattern: the positions to store and the index.

    Filler slots of ``delta`` lie strictly between two nonzeros, so the caller's values at the
    slots are zero there without any special case.
    """
    flat = np.asarray(nonzero, dtype=bool).reshape(-1)
    kind, gap_bits = parse_encoding(encoding)
    if kind == "dense":
        return np.arange(flat.size), b""
    positions = np.flatnonzero(flat)
    if kind == "bitmap":
        return positions, pack_bits(flat, 1)
    longest = (1 << gap_bits) - 1
    gaps = np.diff(positions, prepend=-1)
    entries = (gaps + longest - 1) // longest  # fillers plus the entry of the nonzero itself
    ends = np.cumsum(entries) - 1  # where each nonzero's own entry lands
    entry_gaps = np.full(int(entries.sum()), longest, dtype=np.int64)
    entry_gaps[ends] = gaps - longest * (entries - 1)
    return np.cumsum(entry_gaps) - 1, pack_bits(entry_gaps, gap_bits)


def decode_slots(index: bytes, encoding: str, numel: int, stored: int) -> np.ndarray:
    """The slots of ``encode_slots`` back from the index; ValueError if they cannot be right."""
    kind, gap_bits = parse_encoding(encoding)
    if kind == "dense":
        if stored != numel:
            raise ValueError(f"dense encoding stores all {numel} values, not {stored}")
        return np.arange(numel)
    if kind == "bitmap":
        slots = np.flatnonzero(unpack_bits(index, numel, 1))
        if slots.size != stored:
            raise ValueError(f"bitmap marks {slots.size} stored values, expected {stored}")
        return slots
    gaps = unpack_bits(index, stored, gap_bits)
    if gaps.size and int(gaps.min()) == 0:
        raise ValueError("delta index holds a zero gap")
    slots = np.cumsum(gaps) - 1
    if slots.size and int(slots[-1]) >= numel:
        raise ValueError(f"delta index reaches position {int(slots[-1])} of {numel}")
    return slots
